"""``svae-impute``: complete sentences whose last words are missing, through the latent code.

    svae-impute data-bin/brown --path checkpoints/checkpoint_best.pt \\
        "he was silent for a" "the jury said it"

prints one completed sentence per given beginning (Bowman et al. 2016, section 5.1: the
completion is decoded, the completed sentence encoded, z drawn from its posterior and the
completion decoded again, ``--iterations`` times; see
:mod:`fairseq_svae.generation.imputation`). It takes fairseq-generate's options (``--beam``,
``--sampling``, ``--no-repeat-ngram-size``, ``--max-len-b``, ``--seed``, ...) and decodes
greedily unless ``--beam`` says otherwise.
"""

import fairseq_svae  # noqa: F401  (registers the task before fairseq builds its parser)
from fairseq_svae.cli.sentence_commands import generation_parser, load_hub, parse_with_sentences
from fairseq_svae.errors import OptionError, exit_on_user_error

PROG = "svae-impute"


def build_parser():
    parser = generation_parser(PROG, __doc__.split("\n\n")[0], "BEGINNING [BEGINNING ...]")
    group = parser.add_argument_group("Imputation")
    group.add_argument("--iterations", type=int, default=10, metavar="T",
                       help="encode-sample-decode rounds after the first completion (0: the "
                            "decoder's continuation under the beginning's posterior mean)")
    return parser


def main(argv=None) -> None:
    args, beginnings = parse_with_sentences(build_parser(), argv)
    if args.iterations < 0:
        raise OptionError(f"--iterations must be >= 0, got {args.iterations}")
    hub = load_hub(args)
    for sentence in hub.impute(beginnings, iterations=args.iterations, seed=args.seed):
        print(sentence)


def cli_main():
    exit_on_user_error(main, PROG)


if __name__ == "__main__":
    cli_main()
