"""N different outputs per source from a conditional VAE, each decoded from its own z ~ p(z|x).

``fairseq-generate --user-dir fairseq_svae --task translation --path CVAE.pt --latent-samples N``
prints N hypotheses per source, as fairseq prints an N-best list (H-/D-/P- lines each). It
decodes M = 4N draws z_k ~ p(z|x) with the chosen search (beam, or ``--sampling``), the best
output of each, and prints the different outputs that the most draws decoded to, the most
frequent first (ties: the greater probability mass over the draws). Draws of a well-trained
model often agree (an easy source has one right output), and the frequent outputs are those of
much of p(z|x)'s mass: N draws would print one output several times by chance, where N of 4N are
different for most sources. When a source's M draws give fewer than N different outputs, the
frequent ones come again, each up to its share of the N (N x its draws / M, rounded): what
18 of 20 draws agree on is what the model says, and printing it four times of five (the other
two draws giving one other output) represents p(y|x) better than the beams' weaker
alternatives (see :func:`most_frequent_outputs`). Only when the shares do not fill N either,
or with ``--latent-distinct`` (N different outputs, for users who want variety above all),
the other hypotheses of the draws' beams fill in, the greatest probability mass first (with
``--sampling``, one sentence a draw, the chosen ones come round again). ``--latent-candidates
M`` sets M (M = N: one output a draw, in the order of the draws, repeats included: the fast
choice). Without ``--latent-samples`` a conditional VAE decodes once, from the prior mean.
``--latent-max-copies C`` prints an output at most C times (1 is ``--latent-distinct``; between
it and the default, a user's choice of more different outputs or better ones).
``--latent-scale S`` draws z_k = mu + S * sigma * eps_k: below 1 the outputs
keep closer to the prior mean's (better, less different), above 1 they spread further; the
eps_k are the same for every S, so a source's k-th draw moves along one direction as S changes.

How it gets there, with fairseq's own translation task (:func:`install`, at plugin import):

- fairseq's generation parser gets ``--latent-samples``, ``--latent-scale``,
  ``--latent-candidates``, ``--latent-distinct`` and ``--latent-max-copies`` (so ``fairseq-generate --help`` and
  ``fairseq-interactive --help`` list them). fairseq's configuration keeps only the options of
  its dataclasses, so the parsed values travel as model overrides (``--model-overrides``,
  fairseq's channel for generation-time model options) to the model's ``latent_samples`` and the
  others;
  unless the command line sets them, ``--nbest`` becomes N (all N are printed) and, with
  ``--sampling``, ``--beam`` too (fairseq-generate wants them equal when sampling);
- ``FairseqTask.build_generator``, which every task's generator comes from, wraps fairseq's
  generator in :class:`LatentSamplesGenerator` when the models are conditional VAEs asked for
  samples (by the model option, or by ``latent_samples`` in the generation options: the hub).

The k-th draw of a source is the k-th of that sample id's own random stream (see
:mod:`latent_draws`), seeded from torch's generator when the generator is built, which
fairseq-generate seeds with ``--seed``: the draws are the same whatever the batching.
"""

import ast
import math
import sys
from collections import Counter, defaultdict
from typing import Dict, List, Optional

import torch
from fairseq import options
from fairseq.search import Sampling
from fairseq.tasks import FairseqTask

from fairseq_svae.errors import IncompatibleCheckpointError, OptionError
from fairseq_svae.generation.latent_draws import posterior_latents
from fairseq_svae.generation.ngram_blocking import replace_fairseqs_blocker
from fairseq_svae.models.sentence_cvae import (
    PRIOR_LOGVAR,
    PRIOR_MEAN,
    check_latent_candidates,
    check_latent_max_copies,
    check_latent_samples,
    check_latent_scale,
    is_conditional_vae,
    latent_draws,
)
from fairseq_svae.models.sentence_vae_encoder import LATENT
from fairseq_svae.patching import wrap_once

OPTION = "--latent-samples"
SCALE_OPTION = "--latent-scale"
CANDIDATES_OPTION = "--latent-candidates"
DISTINCT_OPTION = "--latent-distinct"
MAX_COPIES_OPTION = "--latent-max-copies"
# Keys of the generation options (the hub's per-call choice) and of the model's options.
SAMPLES_KEY = "latent_samples"
SCALE_KEY = "latent_scale"
CANDIDATES_KEY = "latent_candidates"
DISTINCT_KEY = "latent_distinct"
MAX_COPIES_KEY = "latent_max_copies"
SEED_KEY = "latent_seed"


def _output(hypothesis) -> tuple:
    return tuple(hypothesis["tokens"].tolist())


def _outputs_found(draws: List[List[dict]]):
    """One pass over the draws' searches: for each different output, log sum_k p(y | x, z_k) over
    the draws whose search found it (see :func:`draws_log_mass`), its best-scored hypothesis, and
    how many draws it was the best output of."""
    log_ps, representative, best_counts = defaultdict(list), {}, Counter()
    for hypotheses in draws:
        for rank, hypothesis in enumerate(hypotheses):
            key = _output(hypothesis)
            log_ps[key].append(hypothesis["positional_scores"].sum())
            if key not in representative or hypothesis["score"] > representative[key]["score"]:
                representative[key] = hypothesis
            if rank == 0:
                best_counts[key] += 1
    log_mass = {key: float(torch.stack(values).double().logsumexp(0)) for key, values in log_ps.items()}
    return log_mass, representative, best_counts


def draws_log_mass(draws: List[List[dict]]) -> Dict[tuple, float]:
    """log sum_k p(y | x, z_k) of each output y that a draw's search found, over the draws whose
    search found it: the part that the searches saw of M * p(y | x), estimated by the mean of
    p(y | x, z_k) over z_k ~ p(z|x). (A hypothesis's positional scores are its tokens' log
    probabilities, end of sentence included; its "score" is divided by its length.)"""
    return _outputs_found(draws)[0]


def most_frequent_outputs(draws: List[List[dict]], n: int, max_copies: int = 0) -> List[dict]:
    """n outputs of one source from its draws' searches (``draws[k]``: the hypotheses of the
    k-th draw's search, best first), each as its best-scored hypothesis, the most frequent first:

    1. the different best hypotheses, most frequent first, ties to the greater probability mass
       over the draws (:func:`draws_log_mass`);
    2. while fewer than n, the frequent ones again, each up to its share of the n outputs,
       n x count / M rounded, and up to ``max_copies`` (0: no other limit; 1: all different,
       ``--latent-distinct``), the next copy going to the output with the most
       draws per copy it already has (Adams's divisor method of apportionment: every different
       output before any repeat);
    3. while still fewer than n, the searches' other hypotheses, the greatest mass first (one
       found by many draws' beams, or likely under one, before a stray one); only when those
       run out too (sampling: one hypothesis a draw) the chosen ones again, so a source always
       gets n, as an n-best list has.

    Why this rule: a draw's best output is what its z means, so the frequent ones cover p(z|x)'s
    mass; by mass alone the outputs would be variants of the likeliest one (less different; on
    the Multi30k CVAE the same average BLEU at pairwise BLEU 58 instead of 54). Where the draws
    agree, the beams' other hypotheses are weaker than the output most draws gave: repeating it
    by its share instead lifts the average BLEU by 0.6 (test) and 0.7 (valid) at 3 points more
    pairwise BLEU, above the line between the different outputs and one output a draw. A limit
    of 2 or 3 copies lies between the two rules: the README's figures for each."""
    log_mass, representative, counts = _outputs_found(draws)
    chosen = sorted(counts, key=lambda key: (-counts[key], -log_mass[key]))[:n]
    copies = Counter(chosen)
    # Each output's share of the n, rounded half up (Python's round() would round 2.5 to 2),
    # and at most max_copies (no share exceeds n).
    limit = max_copies or n
    most_copies = {key: min(limit, math.floor(n * counts[key] / len(draws) + 0.5)) for key in chosen}
    while len(chosen) < n:
        room = [key for key in copies if copies[key] < most_copies[key]]
        if not room:
            break
        chosen.append(max(room, key=lambda key: (counts[key] / copies[key], counts[key], log_mass[key])))
        copies[chosen[-1]] += 1
    if len(chosen) < n:  # the draws' best outputs are used up: the beams' others fill in
        others = sorted((key for key in log_mass if key not in counts), key=lambda key: -log_mass[key])
        chosen += others[:n - len(chosen)]
    chosen.sort(key=lambda key: (-counts[key], -log_mass[key]))  # copies side by side, fill-ins last
    return [representative[chosen[i % len(chosen)]] for i in range(n)]


class LatentSamplesGenerator:
    """fairseq's generator run on each source M times, each row with its own z ~ p(z|x), for N =
    ``samples`` outputs a source.

    The batch of B sources becomes B x M rows (source b's k-th row decodes from z_k); the search
    runs on those rows as on any batch, and source b gets the N different outputs that most of
    its M rows' searches gave (:func:`most_frequent_outputs`), or with M = N the best
    hypothesis of each row, in the order of the draws. M is ``candidates`` (0: 4N,
    ``--latent-candidates``). With ``--sampling`` each row draws one sentence. ``scale``
    multiplies each draw's distance from the prior mean (``--latent-scale``); ``max_copies``
    limits how often one output is printed (``--latent-max-copies``; 1: ``--latent-distinct``).
    """

    def __init__(self, generator, samples: int, seed: int, scale: float = 1.0, candidates: int = 0,
                 max_copies: int = 0):
        check_latent_samples(samples)
        check_latent_scale(scale)
        check_latent_candidates(candidates, samples)
        check_latent_max_copies(max_copies, candidates, samples)
        if generator.model.models_size > 1:
            raise IncompatibleCheckpointError(
                f"{OPTION} needs a single model, got an ensemble of {generator.model.models_size} "
                f"(each model has its own latent space); pass one checkpoint to --path")
        self.generator = generator
        self.samples = samples
        self.seed = seed
        self.scale = scale
        self.max_copies = max_copies
        self.draws = latent_draws(samples, candidates)  # z's decoded a source
        if isinstance(generator.search, Sampling):
            # Each draw of z samples one sentence; --beam only satisfies fairseq-generate's rule
            # that --nbest equal --beam when sampling.
            generator.beam_size = 1

    def __getattr__(self, name):  # what fairseq's commands read of a generator (symbols_to_strip_from_output, ...)
        if name == "generator":
            raise AttributeError(name)
        return getattr(self.generator, name)

    @torch.no_grad()
    def prior_latents(self, model, net_input, ids: List[int]) -> torch.Tensor:
        """The draws z ~ p(z|x), (B x M) x D, source-major (row b * M + k is source b's k-th)."""
        encoder_out = model.encoder(net_input["src_tokens"], net_input["src_lengths"])
        mean = encoder_out[PRIOR_MEAN]
        latents = posterior_latents(mean, encoder_out[PRIOR_LOGVAR], ids, self.seed, samples=self.draws)  # M x B x D
        if self.scale != 1.0:
            latents = mean + self.scale * (latents - mean)  # the same eps, scaled: mu + S * sigma * eps
        return latents.transpose(0, 1).reshape(-1, latents.size(-1))

    @torch.no_grad()
    def generate(self, models, sample, prefix_tokens=None, constraints=None, **kwargs):
        if constraints is not None:
            raise OptionError(f"{OPTION} cannot be combined with --constraints")
        net_input = sample["net_input"]
        repeat = self.draws
        # fairseq-interactive's batches carry no ids: there a source's draws follow its position.
        ids = sample["id"].tolist() if "id" in sample else list(range(net_input["src_tokens"].size(0)))
        latent = self.prior_latents(self.generator.model.single_model, net_input, ids)
        expanded_input = {key: value.repeat_interleave(repeat, dim=0) if torch.is_tensor(value) else value
                          for key, value in net_input.items() if key != "prev_output_tokens"}
        expanded_input[LATENT] = latent
        expanded = dict(sample, net_input=expanded_input)
        if "id" in sample:
            expanded["id"] = sample["id"].repeat_interleave(repeat)
        if sample.get("target") is not None:
            expanded["target"] = sample["target"].repeat_interleave(repeat, dim=0)
        if prefix_tokens is not None:
            prefix_tokens = prefix_tokens.repeat_interleave(repeat, dim=0)
        rows = self.generator.generate(models, expanded, prefix_tokens=prefix_tokens, **kwargs)
        sources = range(len(rows) // repeat)
        if repeat == self.samples:  # one output a draw, in the order of the draws
            return [[rows[source * repeat + k][0] for k in range(repeat)] for source in sources]
        return [most_frequent_outputs(rows[source * repeat:(source + 1) * repeat], self.samples, self.max_copies)
                for source in sources]


def requested(models, generation_args, key: str, default):
    """What was asked for: the generation options' ``key`` (the hub), else the model's option
    (fairseq-generate's, which reaches the model through --model-overrides)."""
    asked = getattr(generation_args, key, None)
    if asked is None:
        asked = getattr(models[0], key, None)
    return default if asked is None else asked


def requested_samples(models, generation_args) -> int:
    """N asked for (0: one output, from the prior mean)."""
    return int(requested(models, generation_args, SAMPLES_KEY, 0) or 0)


def _latent_generator(original):
    def build_generator(self, models, args, *more, **kwargs):
        generator = original(self, models, args, *more, **kwargs)
        # --no-repeat-ngram-size for every model of fairseq's own tasks (translation, lstm and
        # translation_moe baselines included): fairseq's CPU fallback never blocks anything.
        replace_fairseqs_blocker(generator)
        if getattr(args, "score_reference", False) or not models or not all(map(is_conditional_vae, models)):
            return generator
        samples = requested_samples(models, args)
        if samples == 0:
            return generator  # one output, from the prior mean (the encoder's default z)
        seed = getattr(args, SEED_KEY, None)
        if seed is None:
            # From torch's generator, which fairseq-generate seeds with --seed.
            seed = int(torch.randint(0, 2**31 - 1, ()).item())
        scale = float(requested(models, args, SCALE_KEY, 1.0))
        candidates = int(requested(models, args, CANDIDATES_KEY, 0) or 0)
        max_copies = outputs_max_copies(bool(requested(models, args, DISTINCT_KEY, False)),
                                        int(requested(models, args, MAX_COPIES_KEY, 0) or 0))
        return LatentSamplesGenerator(generator, samples, int(seed), scale, candidates, max_copies)

    build_generator.__wrapped__ = original
    return build_generator


def outputs_max_copies(distinct: bool, max_copies: int) -> int:
    """How often one output may be printed of the N: --latent-distinct is --latent-max-copies 1
    (0: up to its share of the N)."""
    if distinct and max_copies not in (0, 1):
        raise OptionError(f"{DISTINCT_OPTION} is {MAX_COPIES_OPTION} 1 and cannot be combined with "
                          f"{MAX_COPIES_OPTION} {max_copies}; give one of them")
    return 1 if distinct else max_copies


def _given(argv: List[str], flag: str) -> bool:
    return any(arg == flag or arg.startswith(flag + "=") for arg in argv)


def _with_latent_samples_option(original):
    def add_generation_args(parser):
        group = original(parser)
        group.add_argument(OPTION, type=int, default=None, metavar="N",
                           help="with a conditional VAE (--arch sentence_cvae, fairseq_svae): N different "
                                "outputs per source, each decoded from its own z ~ p(z|x) with the chosen "
                                f"search (the N most frequent of {CANDIDATES_OPTION} draws' outputs), "
                                "printed as an N-best list (--nbest defaults to N); "
                                "without it, one output from the prior mean")
        group.add_argument(SCALE_OPTION, type=float, default=None, metavar="S",
                           help=f"with {OPTION}: draw z = mean + S * std * eps from p(z|x), so S < 1 "
                                "keeps the outputs closer to the prior mean's (better, less different) "
                                "and S > 1 spreads them (default 1: z ~ p(z|x))")
        group.add_argument(CANDIDATES_OPTION, type=int, default=None, metavar="M",
                           help=f"with {OPTION} N: decode M >= N draws of z and print the N "
                                "outputs that the most draws gave (fewer than N: the frequent "
                                "ones again by their share, then the beams' likeliest other "
                                "hypotheses); M = N prints one output a "
                                "draw, repeats included (default: 4N)")
        group.add_argument(DISTINCT_OPTION, action="store_true", default=None,
                           help=f"with {OPTION} N: always N different outputs (where the draws give "
                                "fewer, the beams' likeliest other hypotheses fill in); by default an "
                                "output that most draws agree on is printed again, up to its share "
                                "of the N, before any fill-in")
        group.add_argument(MAX_COPIES_OPTION, type=int, default=None, metavar="C",
                           help=f"with {OPTION} N: print one output at most C times (an output that "
                                "most draws agree on comes again up to its share of the N and at most "
                                f"C times; then the beams' likeliest other hypotheses): 1 is "
                                f"{DISTINCT_OPTION}, larger C better outputs, smaller C more different "
                                "ones (default: up to the share)")
        return group

    add_generation_args.__wrapped__ = original
    return add_generation_args


def _passing_latent_samples(original):
    def parse_args_and_arch(parser, input_args=None, *more, **kwargs):
        parsed = original(parser, input_args, *more, **kwargs)
        args = parsed[0] if isinstance(parsed, tuple) else parsed
        argv = sys.argv[1:] if input_args is None else list(input_args)
        if not _given(argv, OPTION):  # (fairseq-train's args hold the model's own latent_samples)
            if _given(argv, SCALE_OPTION):
                raise OptionError(f"{SCALE_OPTION} scales the draws of {OPTION} N; add {OPTION} N "
                                  f"(without it the output is decoded from the prior mean)")
            if _given(argv, DISTINCT_OPTION):
                raise OptionError(f"{DISTINCT_OPTION} keeps the outputs of {OPTION} N different; add "
                                  f"{OPTION} N (without it the output is decoded from the prior mean)")
            if _given(argv, MAX_COPIES_OPTION):
                raise OptionError(f"{MAX_COPIES_OPTION} limits the repeats among the outputs of {OPTION} "
                                  f"N; add {OPTION} N (without it the output is decoded from the prior mean)")
            if _given(argv, CANDIDATES_OPTION):
                raise OptionError(f"{CANDIDATES_OPTION} M chooses the outputs of {OPTION} N among M "
                                  f"draws; add {OPTION} N (without it the output is decoded from the "
                                  f"prior mean)")
            return parsed
        samples = getattr(args, SAMPLES_KEY)
        check_latent_samples(samples)
        overrides = ast.literal_eval(getattr(args, "model_overrides", None) or "{}")
        overrides[SAMPLES_KEY] = samples
        scale = getattr(args, SCALE_KEY, None)
        if scale is not None:
            check_latent_scale(scale)  # before fairseq loads the model
            overrides[SCALE_KEY] = scale
        candidates = getattr(args, CANDIDATES_KEY, None)
        if candidates is not None:
            check_latent_candidates(candidates, samples)
            overrides[CANDIDATES_KEY] = candidates
        distinct = bool(getattr(args, DISTINCT_KEY, None))
        if distinct:
            overrides[DISTINCT_KEY] = True
        max_copies = getattr(args, MAX_COPIES_KEY, None)
        if max_copies is not None:
            overrides[MAX_COPIES_KEY] = max_copies
        check_latent_max_copies(outputs_max_copies(distinct, max_copies or 0), candidates or 0, samples)
        args.model_overrides = repr(overrides)
        if not _given(argv, "--nbest"):
            args.nbest = samples
        if getattr(args, "sampling", False) and not _given(argv, "--beam"):
            args.beam = args.nbest
        return parsed

    parse_args_and_arch.__wrapped__ = original
    return parse_args_and_arch


MARK = "__svae_latent_samples__"


def _wrap(owner, name: str, wrapper) -> None:
    wrap_once(owner, name, wrapper, MARK)


def install() -> None:
    """The --latent-samples, --latent-scale, --latent-candidates, --latent-distinct and
    --latent-max-copies options
    and the generator behind them (idempotent)."""
    _wrap(options, "add_generation_args", _with_latent_samples_option)
    _wrap(options, "parse_args_and_arch", _passing_latent_samples)
    _wrap(FairseqTask, "build_generator", _latent_generator)
