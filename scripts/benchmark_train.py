"""Training throughput of sentence_vae_bowman against fairseq's own lstm_lm, one thread each.

Both models train through the real ``fairseq-train`` on Brown (brown-bench dictionary) with the
same embedding/hidden sizes (353/191), batch size, optimizer and number of updates, one process
after the other. The script prints tokens per second for both (from fairseq's own ``wps``,
warm-up interval dropped), their ratio, and the share of this machine's fp32 matmul rate that
the VAE's training step reaches (multiply-adds per token counted from the architecture).

    python scripts/benchmark_train.py                      # ~8 minutes on a quiet machine
    python scripts/benchmark_train.py --updates 200 --data-bin runs/benchmark/data-bin

Run it on an otherwise idle machine: another busy process on the same cores changes the figures.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

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
        [str(BIN / "fairseq-preprocess"), "--only-source", "--trainpref", str(text / "train.txt"),
         "--validpref", str(text / "valid.txt"), "--testpref", str(text / "test.txt"),
         "--thresholdsrc", "3", "--destdir", str(destination), "--workers", "2"],
        check=True, capture_output=True,
    )
    return destination


def matmul_gflops(m: int, k: int, n: int, seconds: float = 2.0) -> float:
    """fp32 matmul rate on one thread for an (m x k) @ (k x n) product."""
    torch.set_num_threads(1)
    a, b = torch.randn(m, k), torch.randn(k, n)
    out = torch.empty(m, n)
    torch.mm(a, b, out=out)
    repeats, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b, out=out)
        repeats += 1
    return 2.0 * m * k * n * repeats / (time.perf_counter() - start) / 1e9


def train_throughput(name: str, args: list, log_interval: int) -> dict:
    """Run fairseq-train and return tokens/s over all logged intervals but the first (warm-up)."""
    env = dict(os.environ, **ONE_THREAD)
    print(f"-- training {name} ...", flush=True)
    result = subprocess.run([str(BIN / "fairseq-train"), *map(str, args)], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        sys.exit(f"fairseq-train for {name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    records = [json.loads(line.split("| train_inner | ", 1)[1]) for line in result.stdout.splitlines()
               if "| train_inner | " in line]
    if len(records) < 2:
        sys.exit(f"{name}: too few logged intervals; raise --updates")
    measured = records[1:]
    tokens = sum(float(r["wpb"]) * log_interval for r in measured)
    seconds = sum(float(r["wpb"]) * log_interval / float(r["wps"]) for r in measured)
    sentences = sum(float(r["bsz"]) * log_interval for r in measured)
    return {"tokens_per_second": tokens / seconds, "tokens_per_sentence": tokens / sentences}


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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-bin", type=Path, default=REPO / "runs" / "benchmark" / "data-bin",
                        help="Brown binarized with the brown-bench dictionary (created if missing)")
    parser.add_argument("--updates", type=int, default=400, help="updates per model")
    parser.add_argument("--log-interval", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=32)
    options = parser.parse_args()

    data_bin = prepare_data_bin(options.data_bin)
    vocabulary = sum(1 for _ in open(data_bin / "dict.txt", encoding="utf-8")) + 4  # + fairseq's specials
    common = ["--optimizer", "adam", "--lr", "1e-3", "--batch-size", options.batch_size, "--dropout", "0.3",
              "--max-update", options.updates, "--cpu", "--num-workers", "0", "--seed", "1", "--no-save",
              "--disable-validation", "--log-format", "json", "--log-interval", options.log_interval]
    vae = train_throughput("sentence_vae_bowman", [
        data_bin, "--user-dir", REPO / "fairseq_svae", "--task", "sentence_vae", "--arch", "sentence_vae_bowman",
        "--criterion", "annealed_elbo", *common], options.log_interval)
    lstm_lm = train_throughput("lstm_lm", [
        data_bin, "--task", "language_modeling", "--sample-break-mode", "eos", "--arch", "lstm_lm",
        "--decoder-embed-dim", EMBED_DIM, "--decoder-hidden-size", HIDDEN_SIZE,
        "--decoder-out-embed-dim", HIDDEN_SIZE, "--criterion", "cross_entropy", *common], options.log_interval)

    square_rate = matmul_gflops(1024, 1024, 1024)
    softmax_rate = matmul_gflops(736, HIDDEN_SIZE, vocabulary)
    work = vae_multiply_adds_per_token(vocabulary, vae["tokens_per_sentence"])
    achieved = vae["tokens_per_second"] * 2 * work["training"] / 1e9
    ratio = vae["tokens_per_second"] / lstm_lm["tokens_per_second"]

    print()
    print(f"Brown, batch {options.batch_size}, {options.updates} updates per model, one thread "
          f"(first {options.log_interval} updates not timed); vocabulary {vocabulary}")
    print(f"  sentence_vae_bowman  {vae['tokens_per_second']:8.0f} tokens/s")
    print(f"  lstm_lm (353/191)    {lstm_lm['tokens_per_second']:8.0f} tokens/s")
    print(f"  ratio VAE / lstm_lm  {ratio:8.2f}   (target >= 0.90)")
    print(f"VAE training step: {work['training'] / 1e6:.1f} M multiply-adds per token "
          f"(softmax {work['softmax'] / 1e6:.2f} M, encoder {work['encoder'] / 1e6:.2f} M, forward x 3)")
    print(f"  achieved {achieved:.1f} GFLOP/s = {achieved / square_rate:.0%} of the fp32 matmul rate "
          f"({square_rate:.1f} GFLOP/s at 1024^3), {achieved / softmax_rate:.0%} of the output-softmax shape "
          f"rate ({softmax_rate:.1f} GFLOP/s at 736 x {HIDDEN_SIZE} x {vocabulary})")


if __name__ == "__main__":
    main()
