"""The harness's results as JSON (every figure, command and file) and as a markdown table."""

import json
import math
from typing import List, Optional

# (JSON key, column title) of the settings table, in order; a setting lacks the figures that do
# not apply to it (one output per source: no average/oracle/pairwise; one reference: no
# leave-one-out BLEU or references covered).
SETTING_COLUMNS = (
    ("outputs_per_source", "outputs"),
    ("first_output_bleu", "BLEU (first output)"),
    ("average_bleu", "average BLEU"),
    ("oracle_bleu", "oracle BLEU"),
    ("pairwise_bleu", "pairwise BLEU"),
    ("leave_one_out_bleu", "leave-one-out BLEU"),
    ("references_covered", "references covered"),
    ("repeated_3gram", "share of outputs with a repeated 3-gram"),
    ("wall_seconds", "wall s"),
)
NLL_COLUMNS = (
    ("method", "method"),
    ("nll_per_sentence", "NLL (nats/sentence)"),
    ("ppl_per_token", "PPL (per token)"),
    ("sentences", "sentences"),
    ("wall_seconds", "wall s"),
)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.2f}"
    return str(value)


def _table(rows: List[dict], columns) -> List[str]:
    present = [(key, title) for key, title in columns if any(key in row for row in rows)]
    lines = ["| " + " | ".join(["setting"] + [title for _, title in present]) + " |",
             "|" + "---|" * (len(present) + 1)]
    for row in rows:
        lines.append("| " + " | ".join([row["name"]] + [_cell(row.get(key)) for key, _ in present]) + " |")
    return lines


def markdown(results: dict, title: Optional[str] = None) -> str:
    lines = [f"## {title}", ""] if title else []
    lines.append(f"{results['sources']} sources of `{results['gen_subset']}`, "
                 f"{results['references_per_source']} reference(s) each; sacreBLEU `{results['bleu_signature']}`.")
    lines += [""] + _table(results["settings"], SETTING_COLUMNS)
    if results.get("references"):
        figures = results["references"]
        lines += ["", f"The references themselves: pairwise BLEU {figures['pairwise_bleu']:.2f}, "
                      f"leave-one-out BLEU {figures['leave_one_out_bleu']:.2f}."]
    if results.get("nll"):
        lines += ["", "-log p(y | x) of the references:", ""] + _table(results["nll"], NLL_COLUMNS)
    return "\n".join(lines) + "\n"


def write(results: dict, json_path: str, markdown_path: str, title: Optional[str] = None) -> str:
    with open(json_path, "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=2, ensure_ascii=False)
        handle.write("\n")
    table = markdown(results, title)
    with open(markdown_path, "w", encoding="utf-8") as handle:
        handle.write(table)
    return table
