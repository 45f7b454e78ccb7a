"""What checking a checkpoint's CRC-32s before loading it costs, next to torch.load itself.

Every local checkpoint that fairseq's loader or ``load_checkpoint_state`` reads is first passed
through :func:`fairseq_svae.checkpoint_io.verify_checkpoint_file`, which recomputes the CRC-32 of
every record of the zip archive torch wrote. This prints the file's size and the median of 5
runs of: ``torch.load`` alone (weights-only, to CPU), that check, and, for comparison, Python's
``zipfile.ZipFile.testzip`` doing the same check its own way. The file is read once beforehand,
so all three read it from the page cache, as the check and the load that follows it do.

Without ``--checkpoint`` it builds a checkpoint of the Brown recipe's model: a
``sentence_vae_bowman`` with a 19,280-word dictionary, its Adam state (the shapes one real
optimizer step gives) and fairseq's other entries, saved with ``torch.save`` to a temporary file.

    OMP_NUM_THREADS=1 python scripts/benchmark_checkpoint_check.py
    OMP_NUM_THREADS=1 python scripts/benchmark_checkpoint_check.py --checkpoint checkpoints/checkpoint_best.pt

Run it on an otherwise idle machine: another busy process on the same cores changes the figures.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BROWN_DICTIONARY_SIZE = 19_280  # examples/brown: the dictionary of the recipe's data-bin
REPEATS = 5


def load_with_fairseq_classes(path: str):
    """torch.load alone (weights-only, to CPU), with the classes fairseq checkpoints name allowed."""
    from fairseq_svae.checkpoint_io import fairseq_checkpoint_classes

    with fairseq_checkpoint_classes():
        return torch.load(path, map_location="cpu", weights_only=True)


def brown_sized_checkpoint(path: str) -> None:
    """torch.save a fairseq-style checkpoint of sentence_vae_bowman with Brown's vocabulary."""
    from fairseq.data import Dictionary
    from fairseq.models import ARCH_CONFIG_REGISTRY

    from fairseq_svae import SentenceVAEModel

    dictionary = Dictionary()
    while len(dictionary) < BROWN_DICTIONARY_SIZE:
        dictionary.add_symbol(f"word{len(dictionary)}")
    args = argparse.Namespace(arch="sentence_vae_bowman")
    ARCH_CONFIG_REGISTRY[args.arch](args)
    task = SimpleNamespace(source_dictionary=dictionary, target_dictionary=dictionary)
    model = SentenceVAEModel.build_model(args, task)
    optimizer = torch.optim.Adam(model.parameters())
    sum(parameter.sum() for parameter in model.parameters()).backward()
    optimizer.step()  # Adam's exp_avg and exp_avg_sq for every parameter
    torch.save({
        "args": args,
        "model": model.state_dict(),
        "optimizer_history": [{"criterion_name": "AnnealedELBOCriterion", "optimizer_name": "FairseqAdam",
                               "lr_scheduler_state": {}, "num_updates": 1}],
        "last_optimizer_state": optimizer.state_dict(),
        "extra_state": {"epoch": 1, "train_iterator": {"epoch": 1}},
    }, path)


def median_seconds(function) -> float:
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="a checkpoint to measure (default: build a Brown-sized one)")
    options = parser.parse_args()

    import fairseq_svae  # noqa: F401  (allows argparse.Namespace for weights-only loading)
    from fairseq_svae.checkpoint_io import verify_checkpoint_file

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    with tempfile.TemporaryDirectory() as scratch:
        path = options.checkpoint
        if path is None:
            path = os.path.join(scratch, "checkpoint_brown_bowman.pt")
            brown_sized_checkpoint(path)
            print(f"built a sentence_vae_bowman checkpoint (dictionary {BROWN_DICTIONARY_SIZE:,}, Adam state)")
        with open(path, "rb") as handle:  # into the page cache
            while handle.read(1 << 24):
                pass
        size = os.path.getsize(path)
        print(f"checkpoint: {path}")
        print(f"file size: {size:,} bytes ({size / 2**20:.1f} MiB)")
        load = median_seconds(lambda: load_with_fairseq_classes(path))
        check = median_seconds(lambda: verify_checkpoint_file(path))
        with zipfile.ZipFile(path) as archive:
            testzip = median_seconds(archive.testzip)
        print(f"torch.load alone:                     {load * 1000:7.1f} ms (median of {REPEATS})")
        print(f"CRC-32 check (verify_checkpoint_file): {check * 1000:7.1f} ms (median of {REPEATS}), "
              f"{size / check / 2**30:.2f} GiB/s, {check / load:.0%} of torch.load")
        print(f"zipfile testzip, for comparison:      {testzip * 1000:7.1f} ms (median of {REPEATS})")


if __name__ == "__main__":
    main()
