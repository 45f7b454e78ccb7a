#!/usr/bin/env python3
"""Turn a fairseq-train checkpoint of a Sentence VAE into a small model directory to ship.

    python scripts/export_pretrained.py runs/qs/vae/checkpoint_last.pt runs/qs/data-bin \\
        examples/brown/pretrained

writes ``DEST/model.pt`` (the weights in fp16, the training configuration, the dictionary
fingerprint; no optimizer state) and ``DEST/dict.txt``, so that
``SentenceVAEModel.from_pretrained(DEST, checkpoint_file="model.pt")`` loads it with no data
directory. fp16 halves the file; the model is rebuilt in fp32 when loaded (load_state_dict
converts), and its figures move by well under 0.01 nats per sentence.
"""

import argparse
import shutil
from pathlib import Path

import torch

import fairseq_svae  # noqa: F401  (safe loading of fairseq checkpoints)
from fairseq_svae.checkpoint_io import load_checkpoint_state
from fairseq_svae.sentence_vae_checkpoint import require_sentence_vae


def export(checkpoint: Path, data_dir: Path, destination: Path) -> Path:
    state = load_checkpoint_state(str(checkpoint))
    # The configuration as fairseq-train saved it: plain containers, the model's an argparse.Namespace.
    cfg = state["cfg"]
    require_sentence_vae(cfg["model"], cfg["task"].get("_name"), str(checkpoint))
    # The dictionary travels with the model: "." is the model directory for from_pretrained.
    cfg["task"]["data"] = "."
    if hasattr(cfg["model"], "data"):
        cfg["model"].data = "."
    shipped = {
        "cfg": cfg,
        "model": {name: tensor.half() if tensor.is_floating_point() else tensor
                  for name, tensor in state["model"].items()},
        "task_state": state.get("task_state", {}),  # the dictionary's fingerprint
        "extra_state": {"num_updates": state["optimizer_history"][-1].get("num_updates")},
        "optimizer_history": state["optimizer_history"][-1:],
        "last_optimizer_state": None,
    }
    destination.mkdir(parents=True, exist_ok=True)
    temporary = destination / "model.pt.partial"
    torch.save(shipped, temporary)
    temporary.replace(destination / "model.pt")
    shutil.copyfile(data_dir / "dict.txt", destination / "dict.txt")
    return destination / "model.pt"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="checkpoint_best.pt / checkpoint_last.pt of fairseq-train")
    parser.add_argument("data_dir", type=Path, help="the fairseq-preprocess directory it was trained on")
    parser.add_argument("destination", type=Path, help="directory for model.pt and dict.txt")
    args = parser.parse_args()
    path = export(args.checkpoint, args.data_dir, args.destination)
    print(f"{path}: {path.stat().st_size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
