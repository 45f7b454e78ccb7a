"""``svae-user-dir``: print the installed plugin's directory, for ``--user-dir $(svae-user-dir)``.

``svae-user-dir translation_moe`` prints instead a directory that loads the plugin together with
fairseq's ``translation_moe`` task (see :mod:`fairseq_svae.user_dirs`): ``--user-dir`` takes one
directory."""

import argparse
import importlib.util
import os

# Other fairseq plugins a --user-dir can bring in beside this one: name -> directory in the package.
WITH_OTHER_PLUGINS = {"translation_moe": os.path.join("user_dirs", "svae_translation_moe")}


def plugin_directory(with_plugin=None) -> str:
    """The directory to give ``--user-dir``: the plugin's, or one of :data:`WITH_OTHER_PLUGINS`."""
    # find_spec locates the package without importing it (importing would import fairseq,
    # slow and chatty on stdout).
    spec = importlib.util.find_spec("fairseq_svae")
    package_dir = list(spec.submodule_search_locations)[0]
    return os.path.join(package_dir, WITH_OTHER_PLUGINS[with_plugin]) if with_plugin else package_dir


def main(argv=None):
    parser = argparse.ArgumentParser(prog="svae-user-dir", description=__doc__.split("\n\n")[0].replace("``", ""))
    parser.add_argument("with_plugin", nargs="?", choices=sorted(WITH_OTHER_PLUGINS),
                        help="print the directory that also registers this fairseq example's task")
    print(plugin_directory(parser.parse_args(argv).with_plugin))


if __name__ == "__main__":
    main()
