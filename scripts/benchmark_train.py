"""Training throughput of sentence_vae_bowman against fairseq's own lstm_lm, one thread each.

All models train through the real ``fairseq-train`` on Brown (brown-bench dictionary) with the
same embedding/hidden sizes (353/191), batch size, learning rate and seed, one process after the
other. Rows:

- ``lstm_lm``, fairseq's ``--optimizer adam``: the baseline;
- the VAE with fairseq's ``adam``, with the plugin's ``fused_adam``, and with ``fused_adam``
  plus ``--bf16-autocast`` (bfloat16 autocast; see fairseq_svae/precision.py).

For each row the script prints tokens per second (from fairseq's own ``wps``, warm-up interval
dropped), the ratio to ``lstm_lm``, and the optimizer's time per update (gradient scaling,
clipping, step and zeroing as fairseq's trainer does them, timed in this process on the row's
own parameters); for fp32 the share of this machine's fp32 matmul rate that the VAE reaches.

    python scripts/benchmark_train.py                      # ~20 minutes on a quiet machine
    python scripts/benchmark_train.py --updates 200 --data-bin runs/benchmark/data-bin
    python scripts/benchmark_train.py --parallel --compare-updates 2000   # a machine with >= 12 idle cores
    python scripts/benchmark_train.py --updates 0 --compare-updates 2000  # only the bf16-vs-fp32 check

``--parallel`` trains the rows at the same time, each pinned to a core of its own (for a machine
with idle cores to spare; the rows then share memory bandwidth, which lowers them a little alike).
``--compare-updates N`` also trains the VAE N updates in fp32 and with ``--bf16-autocast`` from the
same seed (validating at the end, four threads each) and prints both validation losses: the
check that bf16 trains to the same place, not only faster.

On a CPU without native bf16 (no AVX512-BF16 or AMX) torch emulates bf16 about ten times slower
than fp32; the bf16 row then trains only --emulated-bf16-updates updates, and says so.
Run it on an otherwise idle machine: another busy process on the same cores changes the figures.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
# fairseq's commands run as modules of this interpreter, so that the script also works where
# fairseq is importable but its console scripts are not on the PATH.
FAIRSEQ_TRAIN = [sys.executable, "-m", "fairseq_cli.train"]
FAIRSEQ_PREPROCESS = [sys.executable, "-m", "fairseq_cli.preprocess"]

# The sizes both models share (Bowman et al.'s Penn Treebank setting).
EMBED_DIM, HIDDEN_SIZE = 353, 191


def brown_text_dir() -> Path:
    shared = REPO.parent / "shared" / "data" / "brown"
    if (shared / "train.txt").exists():
        return shared
    sys.path.insert(0, str(REPO / "examples" / "brown"))
    from extract_corpus import extract

    return extract(REPO / "runs" / "benchmark" / "text")


def prepare_data_bin(destination: Path) -> Path:
    if (destination / "dict.txt").exists():
        return destination
    text = brown_text_dir()
    subprocess.run(
        [*FAIRSEQ_PREPROCESS, "--only-source", "--trainpref", str(text / "train.txt"),
         "--validpref", str(text / "valid.txt"), "--testpref", str(text / "test.txt"),
         "--thresholdsrc", "3", "--destdir", str(destination), "--workers", "2"],
        check=True, capture_output=True,
    )
    return destination


def command_lines(data_bin: Path, batch_size: int, extra: list) -> tuple:
    """(lstm_lm's, the VAE's) fairseq-train arguments: the same sizes, batches, learning rate and
    seed; ``extra`` is added to both (the device, what to save)."""
    common = ["--lr", "1e-3", "--batch-size", batch_size, "--dropout", "0.3", "--num-workers", "0",
              "--seed", "1", "--log-format", "json", *extra]
    vae = [data_bin, "--user-dir", REPO / "fairseq_svae", "--task", "sentence_vae", "--arch", "sentence_vae_bowman",
           "--criterion", "annealed_elbo", *common]
    lstm_lm = [data_bin, "--task", "language_modeling", "--sample-break-mode", "eos", "--arch", "lstm_lm",
               "--decoder-embed-dim", EMBED_DIM, "--decoder-hidden-size", HIDDEN_SIZE,
               "--decoder-out-embed-dim", HIDDEN_SIZE, "--criterion", "cross_entropy", *common]
    return lstm_lm, vae


def matmul_gflops(m: int, k: int, n: int, seconds: float = 2.0, dtype=torch.float32) -> float:
    """Matmul rate (fp32 unless ``dtype``) on one thread for an (m x k) @ (k x n) product."""
    torch.set_num_threads(1)
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    out = torch.empty(m, n, dtype=dtype)
    torch.mm(a, b, out=out)
    repeats, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b, out=out)
        repeats += 1
    return 2.0 * m * k * n * repeats / (time.perf_counter() - start) / 1e9


def start_training(name: str, args: list, threads: int = 1, cores=None) -> subprocess.Popen:
    """Start fairseq-train on ``threads`` threads, pinned to ``cores`` when given."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    # A --save-dir of its own even under --no-save: fairseq-train still checks (and the plugin
    # locks) the directory, so runs side by side must not share the default ./checkpoints.
    command = [*FAIRSEQ_TRAIN, *map(str, args), "--save-dir", tempfile.mkdtemp(prefix="svae-benchmark-")]
    if cores is not None:
        command = ["taskset", "--cpu-list", ",".join(map(str, cores)), *command]
    print(f"-- training {name} ...", flush=True)
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finished_log(name: str, process: subprocess.Popen) -> str:
    stdout, stderr = process.communicate()
    if process.returncode != 0:
        sys.exit(f"fairseq-train for {name} failed:\n{stdout[-3000:]}\n{stderr[-3000:]}")
    return stdout


def json_records(log: str, kind: str) -> list:
    marker = f"| {kind} | "
    return [json.loads(line.split(marker, 1)[1]) for line in log.splitlines() if marker in line]


def throughput(name: str, log: str, log_interval: int) -> dict:
    """Tokens/s over all logged intervals of a fairseq-train log but the first (warm-up)."""
    records = json_records(log, "train_inner")
    if len(records) < 2:
        sys.exit(f"{name}: too few logged intervals; raise --updates")
    measured = records[1:]
    tokens = sum(float(r["wpb"]) * log_interval for r in measured)
    seconds = sum(float(r["wpb"]) * log_interval / float(r["wps"]) for r in measured)
    sentences = sum(float(r["bsz"]) * log_interval for r in measured)
    return {"tokens_per_second": tokens / seconds, "tokens_per_sentence": tokens / sentences,
            "loss": float(records[-1]["loss"])}


def optimizer_milliseconds(args: list, repeats: int = 10) -> float:
    """Median time of what fairseq's trainer does to the optimizer each update, on the model of
    the fairseq-train command line ``args`` (random gradients; one thread)."""
    from fairseq import options, optim, tasks, utils

    torch.set_num_threads(1)
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    parsed = options.parse_args_and_arch(options.get_training_parser(), [str(a) for a in args])
    utils.import_user_module(parsed)
    cfg = convert_namespace_to_omegaconf(parsed)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = optim.build_optimizer(cfg.optimizer, params)
    timings = []
    for _ in range(repeats + 2):
        for param in params:
            param.grad = torch.randn_like(param)
        start = time.perf_counter()
        optimizer.multiply_grads(1.0 / 32)
        optimizer.clip_grad_norm(cfg.optimization.clip_norm)
        optimizer.step()
        optimizer.zero_grad()
        timings.append(time.perf_counter() - start)
    return 1000 * sorted(timings[2:])[repeats // 2]


def vae_multiply_adds_per_token(vocabulary: int, tokens_per_sentence: float) -> dict:
    """Forward multiply-adds per target token of sentence_vae_bowman (training = 3x forward)."""
    import argparse as _argparse

    import fairseq_svae  # noqa: F401  (registers the architectures)
    from fairseq_svae.models.sentence_vae import sentence_vae_bowman

    a = _argparse.Namespace()
    sentence_vae_bowman(a)
    directions = 2 if a.encoder_bidirectional else 1
    lstm = lambda inputs, hidden: 4 * hidden * (inputs + hidden)  # noqa: E731  (gates x (W_ih, W_hh))
    encoder = directions * lstm(a.encoder_embed_dim, a.encoder_hidden_size)
    encoder += (a.encoder_layers - 1) * directions * lstm(directions * a.encoder_hidden_size, a.encoder_hidden_size)
    decoder_input = a.decoder_embed_dim + (a.latent_dim if a.feed_latent else 0)
    decoder = lstm(decoder_input, a.decoder_hidden_size) + (a.decoder_layers - 1) * lstm(
        a.decoder_hidden_size, a.decoder_hidden_size)
    projection = 0 if a.decoder_out_embed_dim == a.decoder_hidden_size else a.decoder_hidden_size * a.decoder_out_embed_dim
    softmax = a.decoder_out_embed_dim * vocabulary
    per_sentence = (2 * a.latent_dim * directions * a.encoder_hidden_size
                    + a.latent_dim * 2 * a.decoder_layers * a.decoder_hidden_size)
    forward = encoder + decoder + projection + softmax + per_sentence / tokens_per_sentence
    return {"forward": forward, "softmax": softmax, "encoder": encoder, "training": 3 * forward}


def start_comparison(vae: list, updates: int, cores) -> dict:
    """Start training the VAE ``updates`` updates in fp32 and in bf16 from the same seed, each on
    half of ``cores``: {"fp32" | "bf16": process}, for :func:`print_comparison`."""
    half = max(1, len(cores) // 2)
    runs = {}
    for index, (name, extra) in enumerate((("fp32", []), ("bf16", ["--bf16-autocast"]))):
        args = [arg for arg in vae if arg != "--disable-validation"] + [
            "--optimizer", "fused_adam", "--max-update", updates, "--log-interval", max(1, updates // 10),
            "--validate-interval-updates", updates, *extra]
        runs[name] = start_training(f"VAE {name}, {updates} updates, with validation", args, threads=half,
                                    cores=cores[index * half:(index + 1) * half] or None)
    return runs


def print_comparison(runs: dict, updates: int) -> None:
    """The validation losses (negative ELBO per sentence) of :func:`start_comparison`'s runs."""
    losses = {}
    for name, process in runs.items():
        valid = json_records(finished_log(name, process), "valid")
        losses[name] = float(valid[-1]["valid_loss"])
    difference = losses["bf16"] / losses["fp32"] - 1
    print(f"validation loss after {updates} updates, seed 1: fp32 {losses['fp32']:.3f}, "
          f"--bf16-autocast {losses['bf16']:.3f} ({difference:+.2%})")


def measure_rows(options, rows: list, cores: list, data_bin: Path, vocabulary: int, native: bool) -> None:
    """Train each row, then print its tokens/s, ratio to lstm_lm and optimizer time, and the
    fp32 VAE's share of this machine's matmul rate."""
    results, started = {}, []
    for index, (name, args, updates) in enumerate(rows):
        interval = min(options.log_interval, max(1, updates // 4))
        process = start_training(name, args + ["--max-update", updates, "--log-interval", interval],
                                 cores=[cores[index]] if options.parallel else None)
        started.append((name, args, updates, interval, process))
        if not options.parallel:
            results[name] = throughput(name, finished_log(name, process), interval)
    for name, args, updates, interval, process in started:
        if name not in results:
            results[name] = throughput(name, finished_log(name, process), interval)
        results[name]["optimizer_ms"] = optimizer_milliseconds(args)
        results[name]["updates"] = updates

    baseline = results["lstm_lm, adam"]["tokens_per_second"]
    print()
    layout = "rows side by side, one core each" if options.parallel else "one row after the other"
    print(f"Brown, batch {options.batch_size}, one thread ({layout}), first logged interval not timed; vocabulary "
          f"{vocabulary}; native bf16 on this CPU: {'yes' if native else 'no (bf16 is emulated)'}")
    print(f"  {'row':32s} {'updates':>7s} {'tokens/s':>9s} {'x lstm_lm':>9s} {'optimizer ms/update':>20s}")
    for name, figures in results.items():
        print(f"  {name:32s} {figures['updates']:7d} {figures['tokens_per_second']:9.0f} "
              f"{figures['tokens_per_second'] / baseline:9.2f} {figures['optimizer_ms']:20.1f}")

    square_rate = matmul_gflops(1024, 1024, 1024)
    softmax_rate = matmul_gflops(736, HIDDEN_SIZE, vocabulary)
    fused = results["VAE, fused_adam"]
    work = vae_multiply_adds_per_token(vocabulary, fused["tokens_per_sentence"])
    achieved = fused["tokens_per_second"] * 2 * work["training"] / 1e9
    print(f"VAE training step: {work['training'] / 1e6:.1f} M multiply-adds per token "
          f"(softmax {work['softmax'] / 1e6:.2f} M, encoder {work['encoder'] / 1e6:.2f} M, forward x 3)")
    print(f"  fp32 with fused_adam: {achieved:.1f} GFLOP/s = {achieved / square_rate:.0%} of the fp32 matmul rate "
          f"({square_rate:.1f} GFLOP/s at 1024^3), {achieved / softmax_rate:.0%} of the output-softmax shape "
          f"rate ({softmax_rate:.1f} GFLOP/s at 736 x {HIDDEN_SIZE} x {vocabulary})")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-bin", type=Path, default=REPO / "runs" / "benchmark" / "data-bin",
                        help="Brown binarized with the brown-bench dictionary (created if missing)")
    parser.add_argument("--updates", type=int, default=400,
                        help="updates per row (0: no rows, only the --compare-updates runs)")
    parser.add_argument("--emulated-bf16-updates", type=int, default=60,
                        help="updates of the bf16 row on a CPU without native bf16")
    parser.add_argument("--log-interval", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--parallel", action="store_true",
                        help="train the rows at the same time, each on a core of its own")
    parser.add_argument("--compare-updates", type=int, default=0, metavar="N",
                        help="also train fp32 and --bf16-autocast N updates and compare their validation losses")
    options = parser.parse_args()

    from fairseq_svae.precision import native_bf16_cpu

    data_bin = prepare_data_bin(options.data_bin)
    vocabulary = sum(1 for _ in open(data_bin / "dict.txt", encoding="utf-8")) + 4  # + fairseq's specials
    lstm_lm, vae = command_lines(data_bin, options.batch_size, ["--cpu", "--no-save", "--disable-validation"])
    native = native_bf16_cpu()
    bf16_updates = options.updates if native else options.emulated_bf16_updates
    rows = [  # name, command line, updates
        ("lstm_lm, adam", lstm_lm + ["--optimizer", "adam"], options.updates),
        ("VAE, adam", vae + ["--optimizer", "adam"], options.updates),
        ("VAE, fused_adam", vae + ["--optimizer", "fused_adam"], options.updates),
        ("VAE, fused_adam, --bf16-autocast", vae + ["--optimizer", "fused_adam", "--bf16-autocast"], bf16_updates),
    ]
    cores = sorted(os.sched_getaffinity(0))
    if options.parallel and len(cores) < len(rows):
        sys.exit(f"--parallel needs {len(rows)} cores, and this process may use {len(cores)}")
    comparison = None
    if options.compare_updates and (options.parallel or not options.updates):
        # Beside the rows, on cores of its own (or alone, with --updates 0).
        comparison = start_comparison(vae, options.compare_updates,
                                      cores[len(rows):len(rows) + 8] if options.parallel else cores[:8])
    if options.updates:
        measure_rows(options, rows, cores, data_bin, vocabulary, native)
    if options.compare_updates:
        if comparison is None:  # after the timed figures, not beside them
            comparison = start_comparison(vae, options.compare_updates, cores[:8])
        print_comparison(comparison, options.compare_updates)


if __name__ == "__main__":
    main()
