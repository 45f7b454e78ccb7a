"""``svae-interpolate``: decode the path between two sentences' posterior means (Bowman's homotopies).

    svae-interpolate data-bin/brown --path checkpoints/checkpoint_best.pt --steps 7 \\
        "he was silent for a long moment ." "it was my turn ."

prints ``--steps`` sentences, one per line, from the reconstruction of the first sentence to
that of the second; ``--spherical`` walks the great circle instead of the straight line. It
takes fairseq-generate's options (``--cpu``, ``--beam``, ``--sampling``, ``--max-len-b``,
``--bpe sentencepiece --sentencepiece-model ...``, ``--user-dir``, ...); unlike fairseq-generate
it decodes greedily unless ``--beam`` says otherwise, as Bowman et al. did. Errors (a missing
file, an empty or too long sentence, a checkpoint that does not fit) are reported in one line,
as by every command of the plugin (see :mod:`fairseq_svae.errors`).
"""

import fairseq_svae  # noqa: F401  (registers the task before fairseq builds its parser)
from fairseq_svae.cli.sentence_commands import generation_parser, load_hub, parse_with_sentences
from fairseq_svae.errors import OptionError, exit_on_user_error

PROG = "svae-interpolate"


def build_parser():
    parser = generation_parser(PROG, __doc__.split("\n\n")[0], "SENTENCE SENTENCE")
    group = parser.add_argument_group("Interpolation")
    # fmt: off
    group.add_argument("--steps", type=int, default=7, metavar="K",
                       help="number of sentences printed, both endpoints included (at least 2)")
    group.add_argument("--spherical", action="store_true",
                       help="spherical interpolation (slerp) instead of a straight line")
    # fmt: on
    return parser


def main(argv=None) -> None:
    args, (first, second) = parse_with_sentences(build_parser(), argv, count=2)
    if args.steps < 2:
        raise OptionError(f"--steps must be at least 2 (the two endpoints), got {args.steps}")
    hub = load_hub(args)
    for sentence in hub.interpolate(first, second, steps=args.steps, spherical=args.spherical):
        print(sentence)


def cli_main():
    exit_on_user_error(main, PROG)


if __name__ == "__main__":
    cli_main()
