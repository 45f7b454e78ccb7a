"""GPU figures: sentence_vae_bowman against fairseq's lstm_lm on one GPU, in fp32, fp16 and bf16.

The same Brown data, sizes (353/191), batch size, learning rate and seed as
scripts/benchmark_train.py, but on the GPU and each row trained --updates updates (2,000 by
default) with a validation at the end. Rows, one after the other:

- ``lstm_lm`` in fp32 and with ``--fp16``: the baseline;
- the VAE (``--optimizer fused_adam``) in fp32, with fairseq's ``--fp16`` (the whole model in
  half precision, a dynamic loss scale) and with the plugin's ``--bf16-autocast``.

For each row it prints tokens per second (fairseq's ``wps``, first logged interval dropped), the
ratio to lstm_lm in fp32, the final validation loss, whether any logged loss was NaN or infinite,
and for --fp16 how many updates fairseq skipped for a gradient overflow (a handful while the loss
scale settles is fairseq's design; a NaN in the losses is a defect). Then it times
``svae-eval --iw-samples 500`` on the test split with the fp32 row's checkpoint, in fp32 and with
``--bf16``, and prints both IW-NLLs.

    python scripts/benchmark_gpu.py                       # ~6 minutes on an H100/H200
    python scripts/benchmark_gpu.py --updates 500 --json gpu.json
"""

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_train import (  # noqa: E402  (the CPU benchmark's data and command lines)
    FAIRSEQ_TRAIN, REPO, command_lines, json_records, prepare_data_bin, throughput,
)

# fairseq's line when --fp16 skips an update whose gradients overflowed the loss scale.
OVERFLOW_MARKER = "gradient overflow detected"


def train(name: str, args: list, log_dir: Path, log_interval: int) -> dict:
    """Run fairseq-train; return its figures and keep its log in ``log_dir``."""
    print(f"-- training {name} ...", flush=True)
    slug = name.replace(" ", "").replace("-", "_")
    if "--save-dir" not in args:  # fairseq-train checks (and the plugin locks) it even under --no-save
        args = [*args, "--save-dir", log_dir / slug]
    start = time.perf_counter()
    result = subprocess.run([*FAIRSEQ_TRAIN, *map(str, args)], capture_output=True, text=True)
    log = result.stdout + result.stderr
    (log_dir / f"{slug}.log").write_text(log)
    if result.returncode != 0:
        sys.exit(f"fairseq-train for {name} failed:\n{log[-3000:]}")
    inner, valid = json_records(result.stdout, "train_inner"), json_records(result.stdout, "valid")
    if not valid:
        sys.exit(f"{name}: no validation; raise --updates")
    losses = [float(r["loss"]) for r in inner] + [float(v["valid_loss"]) for v in valid]
    figures = {
        "tokens_per_second": throughput(name, result.stdout, log_interval)["tokens_per_second"],
        "valid_loss": float(valid[-1]["valid_loss"]),
        "non_finite_losses": sum(not math.isfinite(loss) for loss in losses),
        "overflow_skips": log.count(OVERFLOW_MARKER),
        "final_loss_scale": float(inner[-1]["loss_scale"]) if "loss_scale" in inner[-1] else None,
        "wall_seconds": time.perf_counter() - start,
    }
    print(f"   {name}: {json.dumps(figures)}", flush=True)  # each row as it ends
    return figures


def time_evaluation(data_bin: Path, checkpoint: Path, iw_samples: int, extra: list, json_path: Path) -> dict:
    command = [sys.executable, "-m", "fairseq_svae.cli.evaluate", str(data_bin), "--path", str(checkpoint),
               "--gen-subset", "test", "--iw-samples", str(iw_samples), "--json", str(json_path), *extra]
    print(f"-- svae-eval {' '.join(extra) or 'fp32'} ...", flush=True)
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"svae-eval failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    figures = json.loads(json_path.read_text())
    figures = {"seconds": time.perf_counter() - start, "iw_nll": figures["iw_nll"], "sentences": figures["sentences"]}
    print(f"   {json.dumps(figures)}", flush=True)
    return figures


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-bin", type=Path, default=REPO / "runs" / "benchmark" / "data-bin",
                        help="Brown binarized with the brown-bench dictionary (created if missing)")
    parser.add_argument("--work-dir", type=Path, default=REPO / "runs" / "benchmark-gpu",
                        help="receives the fp32 VAE's checkpoint and every row's log")
    parser.add_argument("--updates", type=int, default=2000, help="updates per row")
    parser.add_argument("--log-interval", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--iw-samples", type=int, default=500)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    options = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("benchmark_gpu.py needs a CUDA GPU; scripts/benchmark_train.py measures the CPU")

    data_bin = prepare_data_bin(options.data_bin)
    options.work_dir.mkdir(parents=True, exist_ok=True)
    schedule = ["--max-update", options.updates, "--log-interval", options.log_interval,
                "--validate-interval-updates", options.updates]
    lstm_lm, _ = command_lines(data_bin, options.batch_size, ["--no-save", *schedule])
    _, vae = command_lines(data_bin, options.batch_size, [*schedule, "--optimizer", "fused_adam"])
    checkpoint_dir = options.work_dir / "vae-fp32"
    no_save = ["--no-save"]
    rows = [  # name, command line
        ("VAE fp32", vae + ["--save-dir", checkpoint_dir, "--no-epoch-checkpoints", "--no-last-checkpoints"]),
        ("VAE --fp16", vae + no_save + ["--fp16"]),
        ("VAE --bf16-autocast", vae + no_save + ["--bf16-autocast"]),
        ("lstm_lm fp32", lstm_lm + ["--optimizer", "adam"]),
        ("lstm_lm --fp16", lstm_lm + ["--optimizer", "adam", "--fp16"]),
    ]
    results = {name: train(name, args, options.work_dir, options.log_interval) for name, args in rows}
    checkpoint = checkpoint_dir / "checkpoint_best.pt"
    evaluations = {
        precision: time_evaluation(data_bin, checkpoint, options.iw_samples, extra,
                                   options.work_dir / f"eval-{precision}.json")
        for precision, extra in (("fp32", []), ("bf16", ["--bf16"]))
    }

    gpu = torch.cuda.get_device_name(0)
    baseline = results["lstm_lm fp32"]["tokens_per_second"]
    print()
    print(f"{gpu}, torch {torch.__version__}; Brown, batch {options.batch_size}, {options.updates} updates "
          f"per row, first logged interval not timed")
    print(f"  {'row':22s} {'tokens/s':>9s} {'x lstm_lm fp32':>14s} {'valid loss':>10s} {'NaN/inf':>7s} "
          f"{'overflow skips':>14s} {'loss scale':>10s}")
    for name, figures in results.items():
        scale = figures["final_loss_scale"]
        print(f"  {name:22s} {figures['tokens_per_second']:9.0f} {figures['tokens_per_second'] / baseline:14.2f} "
              f"{figures['valid_loss']:10.3f} {figures['non_finite_losses']:7d} {figures['overflow_skips']:14d} "
              f"{'-' if scale is None else f'{scale:g}':>10s}")
    fp32_loss = results["VAE fp32"]["valid_loss"]
    for name in ("VAE --fp16", "VAE --bf16-autocast"):
        print(f"  {name} validation loss vs fp32: {results[name]['valid_loss'] / fp32_loss - 1:+.2%}")
    for precision, figures in evaluations.items():
        print(f"svae-eval --iw-samples {options.iw_samples} on Brown test ({figures['sentences']} sentences), "
              f"{precision}: {figures['seconds']:.1f} s wall, IW-NLL {figures['iw_nll']:.2f}")
    if options.json:
        options.json.write_text(json.dumps({"gpu": gpu, "torch": torch.__version__, "updates": options.updates,
                                            "batch_size": options.batch_size, "rows": results,
                                            "svae_eval": evaluations}, indent=2) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
