"""One evaluation: every setting decoded by fairseq-generate and scored against the references,
the NLL of the asked models, written as JSON and markdown."""

import logging
import os
from typing import List, Optional, Sequence, Tuple

from fairseq_svae.diversity_bleu import bleu_signature, diversity_figures, reference_figures
from fairseq_svae.errors import MissingCheckpointError, MissingDataError, OptionError
from fairseq_svae.importance_sampling import DEFAULT_PRIOR_SHARE
from fairseq_svae.text_statistics import has_repeated_ngram, share
from fairseq_svae.translation_eval import report
from fairseq_svae.translation_eval.generation import Setting, generate_outputs, option_value
from fairseq_svae.translation_eval.likelihood import reference_nll

logger = logging.getLogger("fairseq_svae.translation_eval")


def read_references(paths: Sequence[str]) -> List[List[str]]:
    """references[i] = line i of each file: files aligned with the split's sources."""
    streams = []
    for path in paths:
        if not os.path.isfile(path):
            raise MissingDataError(f"reference file {path} does not exist")
        with open(path, encoding="utf-8") as handle:
            streams.append([line.rstrip("\n") for line in handle])
    lengths = {len(stream) for stream in streams}
    if len(lengths) != 1:
        raise OptionError("the reference files differ in length: " +
                          ", ".join(f"{path}: {len(stream)} lines" for path, stream in zip(paths, streams)))
    return [list(source_references) for source_references in zip(*streams)]


def _check_checkpoint(path: str, what: str) -> None:
    if not os.path.isfile(path):
        raise MissingCheckpointError(f"{what}: checkpoint {path} does not exist")


def evaluate_translations(data: str, references: Sequence[str], settings: Sequence[Setting],
                          nll_models: Sequence[Tuple[str, str]], output_dir: str,
                          common_options: Sequence[str], examples: int = 5,
                          title: Optional[str] = None, iw_samples: int = 100,
                          iw_prior_share: float = DEFAULT_PRIOR_SHARE) -> dict:
    """Decode and score each setting in turn, then the NLL of each (name, checkpoint): exact, or
    for a conditional VAE importance-weighted with ``iw_samples`` draws; write
    OUTPUT_DIR/results.json and results.md; return the results."""
    reference_lists = read_references(references)
    sources = len(reference_lists)
    for setting in settings:
        _check_checkpoint(setting.checkpoint, f"setting {setting.name!r}")
    for name, checkpoint in nll_models:
        _check_checkpoint(checkpoint, f"--nll {name!r}")
    if len({setting.slug for setting in settings}) != len(settings):
        raise OptionError("two settings have the same name (as a file name): " +
                          ", ".join(setting.name for setting in settings))
    os.makedirs(output_dir, exist_ok=True)
    m = len(reference_lists[0])
    results = {
        "data": data,
        "gen_subset": option_value(common_options, "--gen-subset") or "test",
        "reference_files": list(references),
        "sources": sources,
        "references_per_source": m,
        "bleu_signature": bleu_signature(m),
        "generate_options": list(common_options),
        "settings": [],
        "nll": [],
    }
    if m > 1:
        results["references"] = reference_figures(reference_lists)
    for setting in settings:
        logger.info(f"setting {setting.name!r}: fairseq-generate {' '.join(setting.options)}")
        run = generate_outputs(setting, data, common_options, sources, output_dir)
        row = {"name": setting.name, "checkpoint": setting.checkpoint, "options": setting.options}
        row.update(diversity_figures(run["outputs"], reference_lists))
        # Loops: BLEU can look fine next to outputs that repeat themselves.
        row["repeated_3gram"] = share([has_repeated_ngram(output.split())
                                       for source_outputs in run["outputs"] for output in source_outputs])
        row["examples"] = [{"references": reference_lists[i], "outputs": run["outputs"][i]}
                           for i in range(min(examples, sources))]
        row.update(commands=[" ".join(command) for command in run["commands"]], files=run["files"],
                   wall_seconds=run["wall_seconds"])
        results["settings"].append(row)
        logger.info(f"setting {setting.name!r}: " + ", ".join(
            f"{key} {value:.2f}" for key, value in row.items() if key.endswith("bleu")))
    for name, checkpoint in nll_models:
        results["nll"].append(reference_nll(name, checkpoint, data, common_options, sources, output_dir, iw_samples,
                                              iw_prior_share))
    table = report.write(results, os.path.join(output_dir, "results.json"),
                         os.path.join(output_dir, "results.md"), title)
    print(table, end="")
    return results
