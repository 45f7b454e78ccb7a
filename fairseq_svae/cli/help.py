"""``--help`` of the plugin's commands: their own options first, fairseq's behind ``--help-all``.

The commands build on fairseq's parsers (generation, validation), whose argparse help runs to
hundreds of lines with the command's own options at the very end. :func:`own_options_first`
takes a fairseq parser once fairseq has built it; every option added afterwards is the
command's own. ``-h/--help`` then prints a short usage, the description, those options by group
and a few of fairseq's that every run needs (``--path``, ``--cpu``, ...), and says how many
others ``--help-all`` lists; ``--help-all`` prints argparse's complete help.
"""

import argparse
import sys
from typing import Iterable, Optional

HELP_ALL = "--help-all"
# fairseq options the short help names as examples of what --help-all shows (those the parser has).
EXAMPLES = ("--beam", "--sampling", "--no-repeat-ngram-size", "--max-tokens", "--fp16", "--bpe")


class _ShortHelp(argparse.Action):
    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings=option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        sys.stdout.write(short_help(parser))
        parser.exit()


class _FullHelp(_ShortHelp):
    def __call__(self, parser, namespace, values, option_string=None):
        parser.print_help()
        parser.exit()


def own_options_first(parser: argparse.ArgumentParser, main_fairseq_options: Iterable[str],
                      usage: Optional[str] = None) -> argparse.ArgumentParser:
    """Give ``parser`` (as fairseq built it, before the command adds its own options) the short
    ``--help`` and ``--help-all``; ``main_fairseq_options`` are the fairseq flags the short help
    shows too, ``usage`` the usage line (argparse's would list every fairseq option)."""
    parser._svae_fairseq_actions = frozenset(parser._actions)
    parser._svae_main_fairseq_options = tuple(main_fairseq_options)
    if usage is not None:
        parser.usage = usage
    argparse_help = parser._option_string_actions.get("-h")
    if argparse_help is not None:  # replaced, as conflict_handler="resolve" would
        for flag in argparse_help.option_strings:
            parser._option_string_actions.pop(flag, None)
        argparse_help.container._remove_action(argparse_help)
    parser.add_argument("-h", "--help", action=_ShortHelp,
                        help=f"show this command's options and exit ({HELP_ALL}: also fairseq's)")
    parser.add_argument(HELP_ALL, action=_FullHelp,
                        help="show every option, fairseq's included, and exit")
    parser._svae_fairseq_actions |= {parser._option_string_actions["-h"],
                                     parser._option_string_actions[HELP_ALL]}
    return parser


def short_help(parser: argparse.ArgumentParser) -> str:
    formatter = parser._get_formatter()
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    formatter.add_text(parser.description)
    fairseq_actions = parser._svae_fairseq_actions
    for group in parser._action_groups:
        own = [action for action in group._group_actions
               if action not in fairseq_actions and action.help is not argparse.SUPPRESS]
        if own:
            formatter.start_section(group.title)
            formatter.add_text(group.description)
            formatter.add_arguments(own)
            formatter.end_section()
    main = [parser._option_string_actions[flag] for flag in parser._svae_main_fairseq_options
            if flag in parser._option_string_actions]
    formatter.start_section("main fairseq options")
    formatter.add_arguments([parser._option_string_actions["-h"], parser._option_string_actions[HELP_ALL],
                             *main])
    formatter.end_section()
    others = sum(1 for action in fairseq_actions if action.option_strings) - len(main) - 2
    examples = [flag for flag in EXAMPLES if flag in parser._option_string_actions
                and flag not in parser._svae_main_fairseq_options]
    formatter.add_text(f"fairseq's {others} other options ({', '.join(examples)}, ...): "
                       f"{parser.prog} {HELP_ALL}")
    return formatter.format_help()
