#!/usr/bin/env python3 -u
"""``svae-translation-eval``: fairseq translation models side by side: BLEU, and for N outputs per
source average, oracle and pairwise BLEU; -log p(y | x) of the references.

    svae-translation-eval data-bin/multi30k --references test.de --output-dir results \\
        --post-process sentencepiece \\
        --setting "lstm beam 5" lstm/checkpoint_best.pt "--beam 5" \\
        --setting "lstm 5-best" lstm/checkpoint_best.pt "--beam 5 --nbest 5" \\
        --setting "lstm sampling" lstm/checkpoint_best.pt "--sampling --beam 5 --nbest 5" \\
        --setting "hMoEup 5 experts" moe/checkpoint_best.pt \\
                  "--task translation_moe --method hMoEup --num-experts 5 --beam 5" \\
        --nll lstm lstm/checkpoint_best.pt --nll CVAE cvae/checkpoint_best.pt

Each setting is one checkpoint and the fairseq-generate options that decode with it; it runs as
real fairseq-generate processes (a translation_moe setting once per expert, ``--gen-expert E``),
with this plugin's safe checkpoint loading. Outputs are fairseq-generate's D- lines (with
``--post-process sentencepiece``: words, not pieces) and are scored with sacreBLEU against the
reference files, which hold the split's target text as the data ships it, line i for source i;
several files give several references per source. ``--nll NAME CHECKPOINT`` adds -log p(y | x)
of the references, in nats per sentence: exact for a fairseq model (fairseq-generate
--score-reference), importance-weighted with ``--iw-samples`` K draws for a conditional VAE
(``--iw-prior-share`` of them from its prior p(z | x), the others from q(z | x, y)).
OUTPUT_DIR receives results.json, results.md and every fairseq-generate output.
"""

import argparse
import logging
import os
import shlex
import sys

from fairseq_svae.errors import exit_on_user_error
from fairseq_svae.importance_sampling import DEFAULT_PRIOR_SHARE, check_prior_share
from fairseq_svae.translation_eval.generation import Setting
from fairseq_svae.translation_eval.run import evaluate_translations

PROG = "svae-translation-eval"


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0].replace("``", ""),
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]).replace("``", ""))
    # fmt: off
    parser.add_argument("data", help="fairseq-preprocess's directory of the translation data")
    parser.add_argument("--references", nargs="+", required=True, metavar="FILE",
                        help="target text of the split, one line per source; several files: several references")
    parser.add_argument("--output-dir", required=True, metavar="DIR",
                        help="where results.json, results.md and the fairseq-generate outputs go")
    parser.add_argument("--setting", nargs=3, action="append", default=[], metavar=("NAME", "CHECKPOINT", "OPTIONS"),
                        help="a row of the table: its name, checkpoint and fairseq-generate options (one string)")
    parser.add_argument("--nll", nargs=2, action="append", default=[], metavar=("NAME", "CHECKPOINT"),
                        help="also -log p(y | x) of the references under this model: exact, or "
                             "importance-weighted for a conditional VAE (sentence_cvae)")
    parser.add_argument("--iw-samples", type=int, default=100, metavar="K",
                        help="importance samples z per sentence for a conditional VAE's -log p(y | x)")
    parser.add_argument("--iw-prior-share", type=float, default=DEFAULT_PRIOR_SHARE, metavar="S",
                        help="the share of the K samples drawn from the prior p(z | x) instead of "
                             "q(z | x, y), each weighted by the mixture's density: a tighter "
                             f"estimate at the same K (default {DEFAULT_PRIOR_SHARE}; 0: all from q)")
    parser.add_argument("--gen-subset", default="test", help="the split to decode (default: test)")
    parser.add_argument("--batch-size", type=int, default=64, help="sentences per batch of fairseq-generate")
    parser.add_argument("--seed", type=int, default=1, help="fairseq-generate's --seed (for sampling settings)")
    parser.add_argument("--post-process", default=None, metavar="NAME",
                        help="fairseq-generate's --post-process, e.g. sentencepiece: join subwords into words")
    parser.add_argument("--gpu", action="store_true", help="decode on the GPU (default: --cpu)")
    parser.add_argument("--generate-options", default="", metavar="OPTIONS",
                        help="more fairseq-generate options for every setting, one string "
                             "(--generate-options=--OPTION for a single one)")
    parser.add_argument("--examples", type=int, default=5, metavar="N",
                        help="the outputs of the first N sources go into results.json")
    parser.add_argument("--title", default=None, help="a heading for results.md")
    # fmt: on
    return parser


def common_options(args) -> list:
    # --required-batch-size-multiple 1: fairseq 0.12 leaves out the last sentences of a split when
    # they do not fill a batch of a multiple of it (8 by default; fairseq issue #5036).
    options = ["--gen-subset", args.gen_subset, "--batch-size", str(args.batch_size), "--seed", str(args.seed),
               "--required-batch-size-multiple", "1", "--num-workers", "0"]
    if not args.gpu:
        options.append("--cpu")
    if args.post_process:
        options += ["--post-process", args.post_process]
    return options + shlex.split(args.generate_options)


def take_settings(argv):
    """(argv without the --setting triples, the triples). argparse would read an OPTIONS string
    without a space in it ("--sampling") as an option of its own, so the triples are taken
    verbatim first."""
    rest, settings = [], []
    i = 0
    while i < len(argv):
        if argv[i] == "--setting":
            if len(argv) - i < 4:
                get_parser().error("--setting takes three values: NAME CHECKPOINT OPTIONS")
            settings.append(argv[i + 1:i + 4])
            i += 4
        else:
            rest.append(argv[i])
            i += 1
    return rest, settings


def main(argv=None) -> dict:
    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s",
                        datefmt="%Y-%m-%d %H:%M:%S", level=os.environ.get("LOGLEVEL", "INFO").upper(),
                        stream=sys.stderr, force=True)
    argv, triples = take_settings(sys.argv[1:] if argv is None else list(argv))
    args = get_parser().parse_args(argv)
    check_prior_share(args.iw_prior_share, "--iw-prior-share")  # before any decoding, not after it
    settings = [Setting(name, checkpoint, shlex.split(options)) for name, checkpoint, options in triples]
    return evaluate_translations(args.data, args.references, settings, [tuple(pair) for pair in args.nll],
                                 args.output_dir, common_options(args), args.examples, args.title,
                                 args.iw_samples, args.iw_prior_share)


def cli_main():
    exit_on_user_error(main, PROG)


if __name__ == "__main__":
    cli_main()
