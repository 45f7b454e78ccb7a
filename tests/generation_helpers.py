"""Running fairseq-generate on the plugin and reading what it printed."""

import re
from dataclasses import dataclass, field
from typing import Dict, Optional

from fairseq_svae.generation.decoding_defaults import DECODE_CODE

from conftest import PLUGIN_DIR, run_command

# fairseq-generate's flags for the hub's default decoding of a code (greedy, 3-gram blocking, no <unk>).
def command_line_flags(options):
    """fairseq command-line flags for generation options (a True boolean is a bare flag)."""
    flags = []
    for name, value in options.items():
        flag = f"--{name.replace('_', '-')}"
        if value is True:
            flags.append(flag)
        elif value is not False:
            flags += [flag, str(value)]
    return flags


DECODE_CODE_FLAGS = command_line_flags(DECODE_CODE)


@dataclass
class Generated:
    hypotheses: Dict[int, str] = field(default_factory=dict)  # H-: id -> sentence
    scores: Dict[int, float] = field(default_factory=dict)  # H-: id -> score (base 2, per token)
    sources: Dict[int, str] = field(default_factory=dict)  # S-
    targets: Dict[int, str] = field(default_factory=dict)  # T-
    bleu: Optional[float] = None  # "Generate ... BLEU = x"
    output: str = ""

    def in_order(self):
        return [self.hypotheses[i] for i in range(len(self.hypotheses))]


def parse_generate_output(text: str) -> Generated:
    generated = Generated(output=text)
    for line in text.splitlines():
        kind, _, rest = line.partition("-")
        if kind not in ("H", "S", "T") or "\t" not in rest:
            continue
        sample_id, _, rest = rest.partition("\t")
        if not sample_id.isdigit():
            continue
        if kind == "H":
            score, _, sentence = rest.partition("\t")
            generated.hypotheses[int(sample_id)] = sentence
            generated.scores[int(sample_id)] = float(score)
        elif kind == "S":
            generated.sources[int(sample_id)] = rest
        else:
            generated.targets[int(sample_id)] = rest
    match = re.search(r"^Generate \S+ with beam=\d+: BLEU = ([\d.]+)", text, re.MULTILINE)
    if match:
        generated.bleu = float(match.group(1))
    return generated


def generate(data_dir, checkpoint, *extra, check: bool = True, env=None):
    """fairseq-generate with the plugin on the CPU; returns the parsed output (or the process)."""
    result = run_command(
        "fairseq-generate", data_dir, "--user-dir", PLUGIN_DIR, "--task", "sentence_vae",
        "--path", checkpoint, "--cpu", "--num-workers", "0", *extra, check=check, env=env,
    )
    return parse_generate_output(result.stdout) if check else result


def read_lines(path):
    return path.read_text(encoding="utf-8").splitlines()
