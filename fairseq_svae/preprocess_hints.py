"""The fairseq-preprocess commands that error messages suggest: the one home of their text.

A suggested command must never write over an existing file. fairseq-preprocess writes into
``--destdir`` under fixed names (``dict.txt``, ``train.bin/.idx``, ``valid.bin/.idx``,
``test.bin/.idx``, ``valid1``/``test1`` ... for further comma-separated prefixes, and
``preprocess.log``), overwriting whatever is there. So every suggestion binarizes into a
directory that does not exist yet and, where the files belong in an existing data directory,
copies them there with ``cp -n`` (which never replaces a file).
"""

import os
import re
import shlex
from typing import List

# What fairseq-preprocess can name a split: its three prefixes, and a number after valid/test
# for the second, third ... comma-separated file of --validpref / --testpref.
PREPROCESS_SPLIT = re.compile(r"^(train|valid\d*|test\d*)$")


def fresh_directory(near: str, purpose: str) -> str:
    """A directory path beside ``near`` that does not exist yet (``near-purpose``, ``near-purpose2`` ...)."""
    base = f"{os.path.normpath(near)}-{purpose}"
    candidate, number = base, 1
    while os.path.exists(candidate):
        number += 1
        candidate = f"{base}{number}"
    return candidate


def existing_splits(data_dir: str) -> List[str]:
    """Splits with both a .bin and an .idx file in ``data_dir``."""
    if not os.path.isdir(data_dir):
        return []
    names = os.listdir(data_dir)
    return sorted(name[:-4] for name in names if name.endswith(".bin") and name[:-4] + ".idx" in names)


def new_corpus_command(destdir: str) -> str:
    """Binarize train/valid/test text into ``destdir`` (a fresh directory if it already has files)."""
    if os.path.isdir(destdir) and os.listdir(destdir):
        destdir = fresh_directory(destdir, "binarized")
    return (
        "fairseq-preprocess --only-source --trainpref train.txt --validpref valid.txt "
        f"--testpref test.txt --thresholdsrc 3 --destdir {shlex.quote(destdir)}"
    )


def against_dictionary_command(srcdict: str, destdir_near: str) -> str:
    """Binarize text against an existing ``dict.txt`` into a fresh directory."""
    destdir = fresh_directory(destdir_near, "binarized")
    return (
        f"fairseq-preprocess --only-source --srcdict {shlex.quote(srcdict)} --testpref test.txt "
        f"--destdir {shlex.quote(destdir)}"
    )


def missing_split_message(data_dir: str, split: str) -> str:
    """Why ``split`` cannot be read from ``data_dir`` and how to add it without touching a file."""
    found = existing_splits(data_dir)
    listed = ", ".join(found) if found else "none"
    fresh = fresh_directory(data_dir, split)
    text_file = f"{split}.txt"
    quoted_data, quoted_fresh = shlex.quote(data_dir), shlex.quote(fresh)
    # --testpref writes test.bin/.idx into the fresh directory; copied under the split's name.
    command = (
        f"fairseq-preprocess --only-source --srcdict {shlex.quote(os.path.join(data_dir, 'dict.txt'))} "
        f"--testpref {shlex.quote(text_file)} --destdir {quoted_fresh} && "
        f"cp -n {quoted_fresh}/test.bin {quoted_data}/{split}.bin && "
        f"cp -n {quoted_fresh}/test.idx {quoted_data}/{split}.idx"
    )
    naming = (
        "fairseq-preprocess names what it writes train, valid, test (and valid1, test1 ... for "
        "further comma-separated --validpref/--testpref files) and overwrites those files in "
        "--destdir"
    )
    if not PREPROCESS_SPLIT.match(split):
        naming += f", so it never writes a split called {split!r} itself"
    return (
        f"split {split!r} not found: no {os.path.join(data_dir, split)}.bin/.idx. Splits in "
        f"{data_dir}: {listed}. {naming}. To add {split!r} from {text_file} (one sentence per line) "
        f"without touching the existing files, binarize it against the model's dictionary into a "
        f"new directory and copy it in: {command}"
    )


def rebinarize_command(data_dir: str) -> str:
    """Binarize the corpus again against ``data_dir``'s own dictionary into a fresh directory
    (the word ids stay those a model trained on ``data_dir`` knows)."""
    fresh = fresh_directory(data_dir, "rebinarized")
    return (
        f"fairseq-preprocess --only-source --srcdict {shlex.quote(os.path.join(data_dir, 'dict.txt'))} "
        f"--trainpref train.txt --validpref valid.txt --testpref test.txt --destdir {shlex.quote(fresh)}"
    )
