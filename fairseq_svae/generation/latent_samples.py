"""N outputs per source from a conditional VAE, each decoded from its own z ~ p(z|x).

``fairseq-generate --user-dir fairseq_svae --task translation --path CVAE.pt --latent-samples N``
prints N hypotheses per source, as fairseq prints an N-best list (H-/D-/P- lines each): the
k-th is the best output of the chosen search (beam, or ``--sampling``) decoded from the k-th
draw z_k ~ p(z|x). Without the option a conditional VAE decodes once, from the prior mean.
``--latent-scale S`` draws z_k = mu + S * sigma * eps_k instead: below 1 the outputs keep closer
to the prior mean's (better, less different), above 1 they spread further; the eps_k are the
same for every S, so a source's k-th output moves along one direction as S changes.

How it gets there, with fairseq's own translation task (:func:`install`, at plugin import):

- fairseq's generation parser gets ``--latent-samples`` and ``--latent-scale`` (so ``fairseq-generate --help`` and
  ``fairseq-interactive --help`` list it). fairseq's configuration keeps only the options of
  its dataclasses, so the parsed value travels as a model override (``--model-overrides``,
  fairseq's channel for generation-time model options) to the model's ``latent_samples``;
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
import sys
from typing import List, Optional

import torch
from fairseq import options
from fairseq.search import Sampling
from fairseq.tasks import FairseqTask

from fairseq_svae.errors import IncompatibleCheckpointError, OptionError
from fairseq_svae.generation.latent_draws import posterior_latents
from fairseq_svae.models.sentence_cvae import PRIOR_LOGVAR, PRIOR_MEAN, is_conditional_vae
from fairseq_svae.models.sentence_vae_encoder import LATENT
from fairseq_svae.patching import wrap_once

OPTION = "--latent-samples"
SCALE_OPTION = "--latent-scale"
# Keys of the generation options (the hub's per-call choice) and of the model's options.
SAMPLES_KEY = "latent_samples"
SCALE_KEY = "latent_scale"
SEED_KEY = "latent_seed"


def check_latent_scale(scale: float) -> None:
    """The one check of --latent-scale (fairseq-generate's option, the hub's ``latent_scale``)."""
    if not scale > 0:
        raise OptionError(f"{SCALE_OPTION} must be > 0, got {scale}")


class LatentSamplesGenerator:
    """fairseq's generator run on each source ``samples`` times, each row with its own z ~ p(z|x).

    The batch of B sources becomes B x N rows (source b's k-th row decodes from z_k); the search
    runs on those rows as on any batch, and source b gets the best hypothesis of each of its N
    rows, in the order of the draws. With ``--sampling`` each row draws one sentence. ``scale``
    multiplies each draw's distance from the prior mean (``--latent-scale``).
    """

    def __init__(self, generator, samples: int, seed: int, scale: float = 1.0):
        if samples < 1:
            raise OptionError(f"{OPTION} must be at least 1, got {samples}")
        check_latent_scale(scale)
        if generator.model.models_size > 1:
            raise IncompatibleCheckpointError(
                f"{OPTION} needs a single model, got an ensemble of {generator.model.models_size} "
                f"(each model has its own latent space); pass one checkpoint to --path")
        self.generator = generator
        self.samples = samples
        self.seed = seed
        self.scale = scale
        if isinstance(generator.search, Sampling):
            # The N outputs are the N draws of z; --beam only satisfies fairseq-generate's rule
            # that --nbest equal --beam when sampling.
            generator.beam_size = 1

    def __getattr__(self, name):  # what fairseq's commands read of a generator (symbols_to_strip_from_output, ...)
        if name == "generator":
            raise AttributeError(name)
        return getattr(self.generator, name)

    @torch.no_grad()
    def prior_latents(self, model, net_input, ids: List[int]) -> torch.Tensor:
        """The draws z ~ p(z|x), (B x N) x D, source-major (row b * N + k is source b's k-th)."""
        encoder_out = model.encoder(net_input["src_tokens"], net_input["src_lengths"])
        mean = encoder_out[PRIOR_MEAN]
        latents = posterior_latents(mean, encoder_out[PRIOR_LOGVAR], ids, self.seed, samples=self.samples)  # N x B x D
        if self.scale != 1.0:
            latents = mean + self.scale * (latents - mean)  # the same eps, scaled: mu + S * sigma * eps
        return latents.transpose(0, 1).reshape(-1, latents.size(-1))

    @torch.no_grad()
    def generate(self, models, sample, prefix_tokens=None, constraints=None, **kwargs):
        if constraints is not None:
            raise OptionError(f"{OPTION} cannot be combined with --constraints")
        net_input = sample["net_input"]
        repeat = self.samples
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
        return [[rows[source * repeat + k][0] for k in range(repeat)] for source in range(len(rows) // repeat)]


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
        return LatentSamplesGenerator(generator, samples, int(seed), scale)

    build_generator.__wrapped__ = original
    return build_generator


def _given(argv: List[str], flag: str) -> bool:
    return any(arg == flag or arg.startswith(flag + "=") for arg in argv)


def _with_latent_samples_option(original):
    def add_generation_args(parser):
        group = original(parser)
        group.add_argument(OPTION, type=int, default=None, metavar="N",
                           help="with a conditional VAE (--arch sentence_cvae, fairseq_svae): N outputs "
                                "per source, each decoded from its own z ~ p(z|x) with the chosen "
                                "search, printed as an N-best list (--nbest defaults to N); "
                                "without it, one output from the prior mean")
        group.add_argument(SCALE_OPTION, type=float, default=None, metavar="S",
                           help=f"with {OPTION}: draw z = mean + S * std * eps from p(z|x), so S < 1 "
                                "keeps the outputs closer to the prior mean's (better, less different) "
                                "and S > 1 spreads them (default 1: z ~ p(z|x))")
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
            return parsed
        samples = getattr(args, SAMPLES_KEY)
        if samples < 1:
            raise OptionError(f"{OPTION} must be at least 1, got {samples}")
        overrides = ast.literal_eval(getattr(args, "model_overrides", None) or "{}")
        overrides[SAMPLES_KEY] = samples
        scale = getattr(args, SCALE_KEY, None)
        if scale is not None:
            check_latent_scale(scale)  # before fairseq loads the model
            overrides[SCALE_KEY] = scale
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
    """The --latent-samples and --latent-scale options and the generator behind them (idempotent)."""
    _wrap(options, "add_generation_args", _with_latent_samples_option)
    _wrap(options, "parse_args_and_arch", _passing_latent_samples)
    _wrap(FairseqTask, "build_generator", _latent_generator)
