"""``svae-user-dir``: print the installed plugin's directory, for ``--user-dir $(svae-user-dir)``."""

import importlib.util


def main():
    # find_spec locates the package without importing it (importing would import fairseq,
    # slow and chatty on stdout).
    spec = importlib.util.find_spec("fairseq_svae")
    print(list(spec.submodule_search_locations)[0])


if __name__ == "__main__":
    main()
