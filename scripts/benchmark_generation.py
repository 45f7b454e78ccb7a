"""Generation speed of a Sentence VAE through the real fairseq-generate, one thread.

Three measurements, each a plain ``fairseq-generate`` run with ``OMP_NUM_THREADS=1`` whose own
timer (model inference only: no loading, no printing) gives the figures:

- prior sampling, greedy (``--sample-from-prior --beam 1``) and beam 5;
- reconstruction of the test split, greedy (add ``--reconstruction-beams 1 5`` for beam 5).

Beside each figure it prints the bound set by the output projection alone: every generated
token (and every beam row) costs ``out_dim x vocabulary`` multiply-adds, at this machine's fp32
matmul rate measured here in that shape on one thread. The bound is given at the length the
model generated (an undertrained model rambles to ``--max-len-b``) and at 21 tokens (a 20-word
Brown sentence and its end-of-sentence), with the measured tokens/s converted to that length.

    OMP_NUM_THREADS=1 python scripts/benchmark_generation.py \\
        --data-bin /work/runs/data-bin/brown --checkpoint checkpoints/checkpoint_best.pt

Run it on an otherwise idle machine: another busy process on the same cores changes the figures.
"""

import argparse
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
TYPICAL_TOKENS = 21  # a 20-word sentence and </s>

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_train import matmul_gflops  # noqa: E402  (the one home of the matmul-rate probe)

# fairseq-generate's closing line (fairseq_cli/generate.py).
TRANSLATED = re.compile(
    r"Translated ([\d,]+) sentences \(([\d,]+) tokens\) in ([\d.]+)s "
    r"\(([\d.]+) sentences/s, ([\d.]+) tokens/s\)"
)


@dataclass
class Measured:
    sentences: int
    tokens: int
    seconds: float

    @property
    def sentences_per_second(self):
        return self.sentences / self.seconds

    @property
    def tokens_per_second(self):
        return self.tokens / self.seconds

    @property
    def tokens_per_sentence(self):
        return self.tokens / self.sentences


def fairseq_generate(options, *extra) -> Measured:
    command = [
        str(BIN / "fairseq-generate"), str(options.data_bin), "--user-dir", str(REPO / "fairseq_svae"),
        "--task", "sentence_vae", "--path", str(options.checkpoint), "--cpu", "--num-workers", "0",
        "--batch-size", str(options.batch_size), "--max-len-b", str(options.max_len_b),
        "--seed", "1", "--quiet", *(["--bf16-autocast"] if options.bf16_autocast else []), *map(str, extra),
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, **ONE_THREAD))
    match = TRANSLATED.search(result.stdout + result.stderr)
    if result.returncode != 0 or match is None:
        sys.exit(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    sentences, tokens = (int(match.group(i).replace(",", "")) for i in (1, 2))
    return Measured(sentences, tokens, float(match.group(3)))


def output_projection_shape(checkpoint: Path):
    """(out_dim, vocabulary) of the decoder's vocabulary projection, read from the checkpoint."""
    import fairseq_svae  # noqa: F401  (safe checkpoint loading)
    from fairseq_svae.checkpoint_io import load_checkpoint_state

    weights = load_checkpoint_state(str(checkpoint))["model"]
    # With --share-decoder-input-output-embed the projection is the input embedding.
    weight = weights.get("decoder.output_projection.weight", weights["decoder.embed_tokens.weight"])
    vocabulary, out_dim = weight.shape
    return out_dim, vocabulary


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-bin", type=Path, required=True, help="fairseq-preprocess directory (with test.*)")
    parser.add_argument("--checkpoint", type=Path, required=True, help="a sentence_vae_bowman-size checkpoint")
    parser.add_argument("--prior-samples", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=200, help="sentences (or codes) per batch")
    parser.add_argument("--max-len-b", type=int, default=200, help="fairseq-generate's length cap (default 200)")
    parser.add_argument("--reconstruction-beams", type=int, nargs="+", default=[1])
    parser.add_argument("--gen-subset", default="test")
    parser.add_argument("--bf16-autocast", action="store_true",
                        help="decode under the task's --bf16-autocast (CPUs with AVX512-BF16 or AMX); "
                             "the bound is then the bf16 matmul rate's")
    options = parser.parse_args()

    out_dim, vocabulary = output_projection_shape(options.checkpoint)
    precision = "bf16" if options.bf16_autocast else "fp32"
    rate = matmul_gflops(options.batch_size, out_dim, vocabulary,
                         dtype=torch.bfloat16 if options.bf16_autocast else torch.float32)
    bound_tokens = rate * 1e9 / (2 * out_dim * vocabulary)  # one projection row per token

    runs = []
    for beam in (1, 5):
        print(f"-- prior sampling, beam {beam} ...", flush=True)
        measured = fairseq_generate(options, "--sample-from-prior", "--prior-samples", options.prior_samples,
                                    "--beam", beam)
        runs.append((f"prior samples, {'greedy' if beam == 1 else f'beam {beam}'}", beam, measured))
    for beam in options.reconstruction_beams:
        print(f"-- reconstruction of {options.gen_subset}, beam {beam} ...", flush=True)
        measured = fairseq_generate(options, "--gen-subset", options.gen_subset, "--beam", beam)
        runs.append((f"{options.gen_subset} reconstruction, {'greedy' if beam == 1 else f'beam {beam}'}",
                     beam, measured))

    print()
    print(f"{options.checkpoint}: output projection {out_dim} x {vocabulary} "
          f"({out_dim * vocabulary / 1e6:.2f} M multiply-adds per generated token and beam row)")
    print(f"one thread; {precision} matmul in that shape ({options.batch_size} x {out_dim} x {vocabulary}): "
          f"{rate:.1f} GFLOP/s -> bound {bound_tokens:.0f} tokens/s per beam row; batches of "
          f"{options.batch_size}, --max-len-b {options.max_len_b}")
    print()
    header = (f"{'':32} {'sent/s':>8} {'bound':>7} {'tokens/s':>9} {'tok/sent':>8} "
              f"{'sent/s @21':>10} {'bound @21':>9}")
    print(header)
    for name, beam, measured in runs:
        bound_at_length = bound_tokens / beam / measured.tokens_per_sentence
        at_typical = measured.tokens_per_second / TYPICAL_TOKENS
        print(f"{name:32} {measured.sentences_per_second:8.1f} {bound_at_length:7.1f} "
              f"{measured.tokens_per_second:9.0f} {measured.tokens_per_sentence:8.1f} "
              f"{at_typical:10.1f} {bound_tokens / beam / TYPICAL_TOKENS:9.1f}")
    print()
    print("sent/s: measured by fairseq-generate; bound: output projection alone at the generated length;")
    print("@21: the same per-token rates for 21-token sentences (20 words + </s>), the issue's reference length.")


if __name__ == "__main__":
    main()
