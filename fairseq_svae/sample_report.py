"""What users see from a Sentence VAE, measured: prior samples, reconstructions and homotopies
next to real sentences of the same split (the report of ``svae-report``).

Every figure is computed on text as the model's dictionary sees it (unknown words are
``<unk>``), so the reference row is the split's sentences after binarization. The figures
themselves live in :mod:`fairseq_svae.text_statistics`; this module decides what is decoded,
seeded so that a report can be made again.
"""

import math
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

from fairseq_svae.generation.imputation import impute_suffixes, language_model_completions
from fairseq_svae.generation.latent_space import interpolation_path
from fairseq_svae.text_statistics import bleu, homotopy_statistics, set_statistics

Progress = Optional[Callable[[int], None]]


@dataclass
class ReportSettings:
    prior_samples: int = 1000
    reconstructions: int = 500
    homotopies: int = 20
    homotopy_steps: int = 7
    spherical: bool = False
    seed: int = 1
    # 0: each sentence against every other sentence of its set.
    self_bleu_references: int = 0
    examples: int = 5
    # Sentences completed after their last words were removed (Bowman et al. section 5.1).
    imputations: int = 100
    missing_fraction: float = 0.2
    imputation_iterations: int = 10
    # Only every stride-th sentence of the split, from the first, is reconstructed, interpolated,
    # imputed and taken as the reference: with paraphrase groups of G, G reads the first sentence
    # of each group (captions: the first caption of each image, as the benchmark measures).
    sentence_stride: int = 1


def choose_sentences(count: int, available: int, seed: int) -> List[int]:
    """``count`` distinct sentence indices of the split, seeded, in a random order."""
    rng = np.random.default_rng([seed, 2016])
    return rng.permutation(available)[: min(count, available)].tolist()


class SampleReport:
    """Decodes what a user would look at and measures it; see :func:`make_report`."""

    def __init__(self, hub, dataset, settings: ReportSettings, critic=None, decoding: Optional[Dict] = None,
                 progress: Progress = None):
        """``decoding``: generation options for the codes of the prior (``"prior"``) and for the
        codes of sentences (``"codes"``: reconstructions, homotopies, imputation)."""
        self.hub = hub
        self.dataset = dataset
        self.settings = settings
        self.critic = critic
        decoding = decoding or {}
        self.prior_generation = dict(decoding.get("prior", {}))
        self.code_generation = dict(decoding.get("codes", {}))
        self.progress = progress
        self.dictionary = hub.dictionary
        self.prior_cap = hub.max_output_tokens(**self.prior_generation)
        self.cap = hub.max_output_tokens(**self.code_generation)

    # -- text ----------------------------------------------------------------------------------
    def text(self, tokens: torch.Tensor) -> str:
        """Words as the dictionary sees them (no BPE undone: the figures count model tokens)."""
        return self.dictionary.string(tokens)

    def statistics(self, token_lists: List[torch.Tensor], length_cap: int = 0) -> Dict:
        texts = [self.text(tokens) for tokens in token_lists]
        figures = set_statistics(texts, self.dictionary.unk_word, length_cap=0,
                                 self_bleu_references=self.settings.self_bleu_references,
                                 seed=self.settings.seed)
        if length_cap:  # counted on tokens: the cut-off sentence ends in a forced </s> at the cap
            figures["hit_length_cap"] = float(np.mean([tokens.numel() >= length_cap for tokens in token_lists]))
        figures["critic_ppl"] = self.critic_perplexity(token_lists)
        return figures

    def critic_perplexity(self, token_lists: List[torch.Tensor]) -> Optional[float]:
        """exp(total NLL / tokens incl. </s>) of the sentences under the critic language model."""
        if self.critic is None or not token_lists:
            return None
        total_nll, total_tokens = 0.0, 0
        batch_size = 256
        for start in range(0, len(token_lists), batch_size):
            chunk = token_lists[start:start + batch_size]
            pairs = self.hub.task.sentence_pairs(chunk, np.array([t.numel() for t in chunk]))
            batch = pairs.collater([pairs[i] for i in range(len(chunk))])
            scored = self.critic.score(batch)
            total_nll += float(scored["nll"].sum())
            total_tokens += int(scored["tokens"].sum())
            if self.progress is not None:
                self.progress(len(chunk))
        return math.exp(total_nll / total_tokens)

    # -- what is decoded -------------------------------------------------------------------------
    def decode(self, latents: torch.Tensor, generation: Optional[Dict] = None) -> List[torch.Tensor]:
        generation = self.code_generation if generation is None else generation
        return self.hub.decode_latents_to_tokens(latents, progress=self.progress, **generation)

    def decode_prior(self, prior: str) -> List[torch.Tensor]:
        # Sampled words are seeded too (and torch's own generator left as it was).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.settings.seed)
            latents = self.hub.prior_latents(self.settings.prior_samples, seed=self.settings.seed, prior=prior)
            return self.decode(latents, self.prior_generation)

    def posterior_means(self, indices: List[int]) -> torch.Tensor:
        return self.hub.encode_tokens([self.dataset[i]["source"] for i in indices])[0]

    def eligible_sentences(self) -> np.ndarray:
        """The split's sentences the report may read (see ``ReportSettings.sentence_stride``)."""
        return np.arange(0, len(self.dataset), self.settings.sentence_stride)

    def choose(self, count: int) -> List[int]:
        eligible = self.eligible_sentences()
        return [int(eligible[i]) for i in choose_sentences(count, len(eligible), self.settings.seed)]

    def make(self) -> Dict:
        settings = self.settings
        sentence_count = len(self.dataset)
        eligible = self.eligible_sentences()
        reference_ids = self.choose(settings.prior_samples)
        references = [self.dataset[i]["source"] for i in reference_ids]

        prior = self.decode_prior("standard")
        # With a fitted prior, its samples beside N(0, I)'s, from the same seed.
        fitted = self.decode_prior("fitted") if self.hub.fitted_prior is not None else None

        reconstruction_ids = reference_ids[: settings.reconstructions]
        if len(reconstruction_ids) < settings.reconstructions:
            reconstruction_ids = self.choose(settings.reconstructions)
        means = self.posterior_means(reconstruction_ids)
        reconstructed = self.decode(means)
        targets = [self.text(self.dataset[i]["source"]) for i in reconstruction_ids]
        hypotheses = [self.text(tokens) for tokens in reconstructed]

        rng = np.random.default_rng([settings.seed, 7])
        pairs = [eligible[rng.choice(len(eligible), size=2, replace=False)].tolist()
                 for _ in range(settings.homotopies)]
        endpoints = self.posterior_means([i for pair in pairs for i in pair]) if pairs else None
        paths, endpoint_matches, capped_steps = [], 0, 0
        for number, (start, end) in enumerate(pairs):
            path = interpolation_path(endpoints[2 * number], endpoints[2 * number + 1], settings.homotopy_steps,
                                      settings.spherical)
            decoded = self.decode(path)
            capped_steps += sum(tokens.numel() >= self.cap for tokens in decoded)
            steps = [self.text(tokens) for tokens in decoded]
            alone = [self.text(tokens) for tokens in self.decode(path[[0, -1]])]
            endpoint_matches += (steps[0] == alone[0]) + (steps[-1] == alone[1])
            paths.append(steps)

        report = {
            "settings": dict(asdict(settings), prior_decoding=self.prior_generation,
                             code_decoding=self.code_generation, length_cap_tokens=self.cap,
                             prior_length_cap_tokens=self.prior_cap, split_sentences=sentence_count),
            "reference": self.statistics(references),
            "prior_samples": self.statistics(prior, self.prior_cap),
            **({"fitted_prior_samples": self.statistics(fitted, self.prior_cap)} if fitted is not None else {}),
            "reconstructions": dict(
                self.statistics(reconstructed, self.cap),
                bleu=bleu(hypotheses, [targets]),
                exact_match=float(np.mean([h == t for h, t in zip(hypotheses, targets)])) if targets else math.nan,
            ),
        }
        if paths:
            report["homotopies"] = dict(
                homotopy_statistics(paths),
                paths=len(paths), steps=settings.homotopy_steps,
                steps_at_length_cap=capped_steps / (len(paths) * settings.homotopy_steps),
                endpoints_equal_reconstructions=endpoint_matches / (2 * len(paths)),
            )
        report["outputs"] = {
            "prior_samples": [self.text(tokens) for tokens in prior],
            **({"fitted_prior_samples": [self.text(tokens) for tokens in fitted]} if fitted is not None else {}),
            "reconstructions": [{"sentence": t, "reconstruction": h} for t, h in zip(targets, hypotheses)],
            "homotopies": paths,
        }
        if settings.imputations > 0:
            report["imputation"], report["outputs"]["imputation"] = self.imputation()
        shown = settings.examples
        report["examples"] = {
            "prior_samples": [self.text(tokens) for tokens in prior[:shown]],
            **({"fitted_prior_samples": [self.text(tokens) for tokens in fitted[:shown]]} if fitted is not None else {}),
            "reconstructions": [{"sentence": t, "reconstruction": h}
                                for t, h in zip(targets[:shown], hypotheses[:shown])],
            "homotopy": paths[0] if paths else [],
            "imputation": report["outputs"].get("imputation", [])[:shown],
        }
        return report

    def imputation(self):
        """Sentences of the split with their last words removed, completed through z and, given
        a critic language model, by its beam search: how close each completion is to the truth."""
        settings = self.settings
        rng = np.random.default_rng([settings.seed, 51])
        eligible = self.eligible_sentences()
        candidates = [i for i in eligible[rng.permutation(len(eligible))].tolist() if self.dataset[i]["source"].numel() >= 5]
        chosen = candidates[: settings.imputations]
        prefixes, truths = [], []
        for index in chosen:
            words = self.dataset[index]["source"][:-1]
            missing = max(1, int(round(settings.missing_fraction * words.numel())))
            prefixes.append(words[:-missing])
            truths.append(words)
        completed = {"vae": impute_suffixes(self.hub, prefixes, settings.imputation_iterations, settings.seed,
                                            **self.code_generation)}
        if self.progress is not None:
            self.progress(len(chosen))
        if self.critic is not None:
            completed["language_model"] = language_model_completions(
                self.critic.model, self.dictionary, prefixes,
                max_len_b=int(self.code_generation.get("max_len_b") or 200),
                no_repeat_ngram_size=int(self.code_generation.get("no_repeat_ngram_size") or 0),
                unk_penalty=float(self.code_generation.get("unkpen") or 0.0),
            )
        figures = {"sentences": len(chosen), "missing_fraction": settings.missing_fraction,
                   "iterations": settings.imputation_iterations}
        rows = [{"beginning": self.text(p), "truth": self.text(t)} for p, t in zip(prefixes, truths)]
        true_ends = [self.text(t[p.numel():]) for p, t in zip(prefixes, truths)]
        for name, sentences in completed.items():
            ends = [self.text(tokens[p.numel():]) for p, tokens in zip(prefixes, sentences)]
            figures[name] = {
                "sentence_bleu": bleu([self.text(t) for t in sentences], [[row["truth"] for row in rows]]),
                "missing_words_bleu": bleu(ends, [true_ends]),
                "missing_words_exact": float(np.mean([e == t for e, t in zip(ends, true_ends)])),
                "completion_length": float(np.mean([len(e.split()) for e in ends])),
                "repeated_3gram": set_statistics([self.text(t) for t in sentences], self.dictionary.unk_word)[
                    "repeated_3gram"],
            }
            for row, end in zip(rows, ends):
                row[name] = end
        figures["true_completion_length"] = float(np.mean([len(t.split()) for t in true_ends]))
        return figures, rows


def work_units(settings: ReportSettings, with_critic: bool, with_fitted_prior: bool = False) -> int:
    """What the progress bar counts: decoded codes plus sentences scored by the critic."""
    prior_sets = 2 if with_fitted_prior else 1
    decoded = (prior_sets * settings.prior_samples + settings.reconstructions + settings.homotopies * (settings.homotopy_steps + 2)
               + settings.imputations)
    scored = (1 + prior_sets) * settings.prior_samples + settings.reconstructions if with_critic else 0
    return decoded + scored


ROWS = (("reference", "test sentences (reference)"), ("prior_samples", "prior samples, N(0, I)"),
        ("fitted_prior_samples", "prior samples, fitted prior"), ("reconstructions", "reconstructions"))


def report_table(report: Dict) -> str:
    """A markdown table of the set figures, one row per set, and the pair/path figures below it."""
    header = ["", "sentences", "length", "hit the cap", "repeated 3-gram", "<unk>", "distinct-1",
              "distinct-2", "self-BLEU", "critic PPL"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, label in ROWS:
        if key not in report:  # no fitted prior
            continue
        f = report[key]
        ppl = "–" if f.get("critic_ppl") is None else f"{f['critic_ppl']:.1f}"
        cap = "–" if key == "reference" else f"{100 * f['hit_length_cap']:.1f}%"
        lines.append(
            f"| {label} | {f['sentences']} | {f['mean_length']:.1f} ± {f['length_std']:.1f} | {cap} | "
            f"{100 * f['repeated_3gram']:.1f}% | {100 * f['unk_share']:.1f}% | {f['distinct_1']:.3f} | "
            f"{f['distinct_2']:.3f} | {f['self_bleu']:.1f} | {ppl} |"
        )
    recon = report["reconstructions"]
    lines.append("")
    lines.append(f"reconstruction BLEU {recon['bleu']:.2f}, exact match {100 * recon['exact_match']:.1f}%")
    if "homotopies" in report:
        h = report["homotopies"]
        lines.append(
            f"homotopies: {h['distinct_sentences_per_path']:.2f} distinct sentences of {h['steps']} per path "
            f"(fewest {h['min_distinct_sentences']}), {h['neighbour_word_edit_distance']:.2f} words changed "
            f"between neighbouring steps (word Jaccard {h['neighbour_word_jaccard']:.2f}), "
            f"{100 * h['steps_with_repeated_3gram']:.1f}% of steps with a repeated 3-gram, "
            f"{100 * h['steps_at_length_cap']:.1f}% at the length cap, endpoints equal to the reconstructions "
            f"{100 * h['endpoints_equal_reconstructions']:.0f}%"
        )
    if "imputation" in report:
        imputation = report["imputation"]
        for name, label in (("vae", "through z"), ("language_model", "critic LM, beam 5")):
            if name in imputation:
                f = imputation[name]
                lines.append(
                    f"imputation of the last {100 * imputation['missing_fraction']:.0f}% of words ({label}): "
                    f"BLEU {f['sentence_bleu']:.1f} (sentence), {f['missing_words_bleu']:.1f} (missing words), "
                    f"{100 * f['missing_words_exact']:.1f}% exact, {f['completion_length']:.1f} words "
                    f"(truth {imputation['true_completion_length']:.1f})"
                )
    return "\n".join(lines)
