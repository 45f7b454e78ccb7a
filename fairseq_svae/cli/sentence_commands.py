"""What the commands that take sentences on the command line share (svae-interpolate, svae-impute):
fairseq's generation parser with the sentences as extra positional arguments, quiet logging, and
the hub over ``--path``."""

import logging
import sys
import warnings
from typing import List, Optional, Tuple

from fairseq import options, utils
from fairseq.dataclass.configs import GenerationConfig
from fairseq.dataclass.utils import convert_namespace_to_omegaconf

from fairseq_svae.cli.help import own_options_first
from fairseq_svae.command_line import ignore_hydra_deprecations
from fairseq_svae.generation.decoding_defaults import CODE, defaults_for, trained_rate, with_defaults
from fairseq_svae.hub_interface import SentenceVAEHubInterface

# fairseq's generation options and the task's one that belongs with them.
GENERATION_FIELDS = frozenset(GenerationConfig.__dataclass_fields__) | {"shared_sampling_noise"}


# fairseq's generation options that --help shows beside the command's own (--help-all: all of
# them); --gen-subset only for commands that read a split, not sentences.
MAIN_GENERATION_OPTIONS = ("--path", "--gen-subset", "--cpu", "--seed", "--user-dir")


def generation_parser(prog: str, description: str, arguments: str = ""):
    """fairseq's generation parser for ``prog``; ``arguments``: what follows the options in its
    usage line (the sentences). Options added to it afterwards are the command's own: ``--help``
    shows them first (see :mod:`fairseq_svae.cli.help`)."""
    parser = options.get_generation_parser(default_task="sentence_vae")
    parser.prog = prog
    parser.description = description.replace("``", "")  # a docstring's paragraph, as plain text
    parser.set_defaults(beam=1)  # fairseq's default is 5; one beam unless asked for more
    usage = f"%(prog)s DATA --path CHECKPOINT [options]{' ' + arguments if arguments else ''}"
    main = [flag for flag in MAIN_GENERATION_OPTIONS if not (arguments and flag == "--gen-subset")]
    return own_options_first(parser, main, usage)


def apply_decoding_defaults(parser, args, argv=None, use=CODE) -> None:
    """Decode as the hub decodes a code of this model (decoding_defaults) where the command line is
    silent; a search named on the command line replaces the default search as a whole."""
    given = given_generation_options(parser, args, argv)
    for name, value in with_defaults(defaults_for(use, checkpoint_rate(args.path)), given).items():
        setattr(args, name, value)


def checkpoint_rate(path):
    """The --target-kl ``path`` was trained with; None when it was not, or when the checkpoint
    cannot be read here (the hub then refuses it in one line)."""
    from fairseq_svae.checkpoint_io import load_checkpoint_state
    from fairseq_svae.errors import UserError

    try:
        return trained_rate(load_checkpoint_state(path).get("cfg"))
    except (OSError, UserError, RuntimeError, ValueError, TypeError):
        return None


def given_generation_options(parser, args, argv=None) -> dict:
    """The generation options the command line names explicitly, with their parsed values."""
    argv = sys.argv[1:] if argv is None else list(argv)
    given = {}
    for action in parser._actions:
        if action.dest in GENERATION_FIELDS and any(
                token == flag or token.startswith(flag + "=") for flag in action.option_strings for token in argv):
            given[action.dest] = getattr(args, action.dest)
    return given


def parse_with_sentences(parser, argv=None, count: Optional[int] = None) -> Tuple[object, List[str]]:
    """Options, and the sentences after them (exactly ``count`` of them, or at least one)."""
    # fairseq adds the task's positional DATA argument while parsing, after ours would be
    # declared, so the sentences are read as the extra positional arguments.
    args, extra = options.parse_args_and_arch(parser, argv, parse_known=True)
    options_left = [arg for arg in extra if arg.startswith("-")]
    if options_left:
        parser.error(f"unrecognized arguments: {' '.join(options_left)}")
    if count is not None and len(extra) != count:
        parser.error(f"expected {count} sentences after the options, got {len(extra)}: {extra}")
    if count is None and not extra:
        parser.error("expected at least one sentence after the options")
    apply_decoding_defaults(parser, args, argv)
    return args, extra


def fairseq_config(args):
    """fairseq's configuration of the parsed options. hydra, which fairseq 0.12 calls to build
    it, warns about its own deprecated APIs; nothing a user of these commands can change."""
    with warnings.catch_warnings():
        ignore_hydra_deprecations()
        return convert_namespace_to_omegaconf(args)


def quiet_logging() -> None:
    """Output goes to stdout; fairseq's progress lines would only get in the way on stderr."""
    logging.basicConfig(stream=sys.stderr, format="%(asctime)s | %(levelname)s | %(name)s | %(message)s")
    logging.getLogger().setLevel(logging.WARNING)


def load_hub(args) -> SentenceVAEHubInterface:
    quiet_logging()
    cfg = fairseq_config(args)
    if cfg.common.seed is not None:
        utils.set_torch_seed(cfg.common.seed)  # for --sampling
    return SentenceVAEHubInterface.from_command_line(cfg)
