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

import logging
import sys

from fairseq import options, utils
from fairseq.dataclass.utils import convert_namespace_to_omegaconf

import fairseq_svae  # noqa: F401  (registers the task before fairseq builds its parser)
from fairseq_svae.errors import OptionError, exit_on_user_error
from fairseq_svae.hub_interface import SentenceVAEHubInterface

PROG = "svae-interpolate"


def build_parser():
    parser = options.get_generation_parser(default_task="sentence_vae")
    parser.prog = PROG
    parser.description = __doc__.split("\n\n")[0]
    group = parser.add_argument_group("Interpolation")
    # fmt: off
    group.add_argument("--steps", type=int, default=7, metavar="K",
                       help="number of sentences printed, both endpoints included (at least 2)")
    group.add_argument("--spherical", action="store_true",
                       help="spherical interpolation (slerp) instead of a straight line")
    # fmt: on
    parser.set_defaults(beam=1)
    return parser


def parse(argv=None):
    parser = build_parser()
    # fairseq adds the task's positional DATA argument while parsing, after ours would be
    # declared, so the two sentences are read as the extra positional arguments.
    args, extra = options.parse_args_and_arch(parser, argv, parse_known=True)
    options_left = [arg for arg in extra if arg.startswith("-")]
    if options_left:
        parser.error(f"unrecognized arguments: {' '.join(options_left)}")
    if len(extra) != 2:
        parser.error(f"expected two sentences after the options, got {len(extra)}: {extra}")
    if args.steps < 2:
        raise OptionError(f"--steps must be at least 2 (the two endpoints), got {args.steps}")
    return args, extra


def main(argv=None) -> None:
    args, (first, second) = parse(argv)
    # Decoded sentences go to stdout; fairseq's progress lines would only get in the way.
    logging.basicConfig(stream=sys.stderr, format="%(asctime)s | %(levelname)s | %(name)s | %(message)s")
    logging.getLogger().setLevel(logging.WARNING)
    cfg = convert_namespace_to_omegaconf(args)
    if cfg.common.seed is not None:
        utils.set_torch_seed(cfg.common.seed)  # for --sampling
    hub = SentenceVAEHubInterface.from_command_line(cfg)
    for sentence in hub.interpolate(first, second, steps=args.steps, spherical=args.spherical):
        print(sentence)


def cli_main():
    exit_on_user_error(main, PROG)


if __name__ == "__main__":
    cli_main()
