"""Real fairseq-generate runs for one evaluation setting, and the outputs read back from them.

A setting is a checkpoint and the fairseq-generate options that decode with it (``--beam 5``,
``--beam 5 --nbest 5``, ``--sampling --beam 5 --nbest 5``, a CVAE's option for N outputs, ...).
Each runs as its own ``python -m fairseq_cli.generate`` process with ``--user-dir`` set to this
plugin, whose weights-only checkpoint loading fairseq 0.12 needs under torch >= 2.6 to read any
checkpoint, fairseq's own ``lstm`` included. A ``--task translation_moe`` setting gets the plugin's
directory that also registers that task (:mod:`fairseq_svae.user_dirs`) and runs once per expert
with ``--gen-expert E``, which is how translation_moe gives its N outputs per source.
"""

import dataclasses
import os
import re
import subprocess
import sys
import time
from collections import defaultdict
from typing import Dict, List, Sequence

from fairseq_svae.cli.user_dir import plugin_directory
from fairseq_svae.errors import OptionError, UserError

TRANSLATION_MOE = "translation_moe"
# fairseq's translation_moe default for --num-experts (TranslationMoEConfig.num_experts).
TRANSLATION_MOE_DEFAULT_EXPERTS = 3


class GenerationFailedError(UserError, RuntimeError):
    """A fairseq-generate (or likelihood) process of the harness failed or left sources out."""


@dataclasses.dataclass
class Setting:
    """One row of the results: what to decode with and how."""

    name: str
    checkpoint: str
    options: List[str]

    @property
    def slug(self) -> str:
        return slug(self.name)


def slug(name: str) -> str:
    """A name as a file name: ``lstm beam 5`` -> ``lstm-beam-5``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unnamed"


def option_value(options: Sequence[str], name: str):
    """The value of ``--name V`` or ``--name=V`` in a fairseq command line (the last one wins,
    as in argparse), or None."""
    value = None
    for i, option in enumerate(options):
        if option == name and i + 1 < len(options):
            value = options[i + 1]
        elif option.startswith(name + "="):
            value = option.split("=", 1)[1]
    return value


def is_translation_moe(options: Sequence[str]) -> bool:
    return option_value(options, "--task") == TRANSLATION_MOE


def runs_of(setting: Setting) -> List[List[str]]:
    """The option lists of the fairseq-generate runs that make a setting's outputs."""
    if not is_translation_moe(setting.options):
        return [list(setting.options)]
    if option_value(setting.options, "--gen-expert") is not None:
        raise OptionError(f"setting {setting.name!r}: leave out --gen-expert; every expert of "
                          f"--num-experts is decoded, one run each")
    experts = int(option_value(setting.options, "--num-experts") or TRANSLATION_MOE_DEFAULT_EXPERTS)
    return [list(setting.options) + ["--gen-expert", str(expert)] for expert in range(experts)]


def generate_command(data: str, checkpoint: str, options: Sequence[str], common: Sequence[str]) -> List[str]:
    user_dir = plugin_directory(TRANSLATION_MOE if is_translation_moe(options) else None)
    return [sys.executable, "-m", "fairseq_cli.generate", data, "--path", checkpoint,
            "--user-dir", user_dir, *common, *options]


def run_logged(command: Sequence[str], output_path: str, what: str) -> str:
    """Run one process of the harness; its stdout goes to ``output_path`` (and is returned), the
    command and its stderr beside it (``.log``)."""
    log_path = output_path + ".log"
    with open(output_path, "w", encoding="utf-8") as stdout, open(log_path, "w", encoding="utf-8") as stderr:
        stderr.write(" ".join(command) + "\n")
        stderr.flush()
        status = subprocess.run(list(command), stdout=stdout, stderr=stderr).returncode
    if status != 0:
        with open(log_path, encoding="utf-8") as stderr:
            last = [line.strip() for line in stderr if line.strip()][-1:]
        raise GenerationFailedError(f"{what} exited with status {status}: "
                                    f"{last[0] if last else 'no message'} (command and output: {log_path})")
    with open(output_path, encoding="utf-8") as stdout:
        return stdout.read()


def read_lines(text: str, prefix: str, field: int) -> Dict[int, List[str]]:
    """``{sample id: [field of each line PREFIX-id, in order]}`` of fairseq-generate's output
    (``D-3\\tscore\\ttext``: field 2 is the detokenized text, field 1 the score; ``P-3\\t...``:
    field 1 the per-token scores)."""
    lines = defaultdict(list)
    for line in text.splitlines():
        if line.startswith(prefix + "-"):
            fields = line.split("\t")
            head = fields[0][len(prefix) + 1:]
            if head.isdigit():
                lines[int(head)].append(fields[field] if field < len(fields) else "")
    return dict(lines)


def outputs_by_source(per_run: Sequence[Dict[int, List[str]]], sources: int, what: str) -> List[List[str]]:
    """Source i's outputs: those of each run in turn (each expert's, for translation_moe)."""
    outputs = []
    for i in range(sources):
        if any(i not in run for run in per_run):
            missing = sum(1 for j in range(sources) if any(j not in run for run in per_run))
            raise GenerationFailedError(f"{what}: fairseq-generate gave no output for {missing} of the "
                                        f"{sources} sources (first: sentence {i}); too long for the "
                                        f"model's positions, or skipped with --skip-invalid-size-inputs-valid-test?")
        outputs.append([output for run in per_run for output in run[i]])
    return outputs


def generate_outputs(setting: Setting, data: str, common: Sequence[str], sources: int,
                     output_dir: str) -> dict:
    """Run a setting; its outputs per source, commands, output files and wall time."""
    started = time.monotonic()
    per_run, commands, files = [], [], []
    runs = runs_of(setting)
    for index, options in enumerate(runs):
        command = generate_command(data, setting.checkpoint, options, common)
        name = setting.slug + (f".expert{index}" if len(runs) > 1 else "")
        path = os.path.join(output_dir, f"generate-{name}.txt")
        text = run_logged(command, path, f"fairseq-generate for setting {setting.name!r}")
        per_run.append(read_lines(text, "D", 2))
        commands.append(command)
        files.append(path)
    return {
        "outputs": outputs_by_source(per_run, sources, f"setting {setting.name!r}"),
        "commands": commands,
        "files": files,
        "wall_seconds": time.monotonic() - started,
    }
