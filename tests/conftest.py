"""Shared fixtures: a slice of the Brown corpus binarized by the real fairseq-preprocess, and helpers
that run the real fairseq commands (fairseq's own tests/test_binaries.py works the same way)."""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The seed of every training fixture. Tests must hold whatever it is (and on any CPU and thread
# count): SVAE_TEST_SEED=11 python -m pytest -q tests trains every model anew from another seed.
TRAIN_SEED = os.environ.get("SVAE_TEST_SEED", "3")
PLUGIN_DIR = REPO / "fairseq_svae"
SHARED_BROWN = REPO.parent / "shared" / "data" / "brown"
BIN = Path(sys.executable).parent

# Small enough that a model trains in seconds, large enough that it learns something.
SLICE_LINES = {"train": 2000, "valid": 200, "test": 200}
SMALL_MODEL = [
    "--arch", "sentence_vae", "--encoder-embed-dim", "64", "--encoder-hidden-size", "128",
    "--latent-dim", "16",
]


def brown_text_dir(tmp_root: Path) -> Path:
    """../shared/data/brown where it exists, else the copy embedded in examples/brown."""
    if (SHARED_BROWN / "train.txt").exists():
        return SHARED_BROWN
    sys.path.insert(0, str(REPO / "examples" / "brown"))
    from extract_corpus import extract

    return extract(tmp_root / "brown-text")


def run_command(name: str, *args, check: bool = True, env=None, cwd=None) -> subprocess.CompletedProcess:
    """Run an installed command (fairseq-train, svae-eval, ...) and return what it printed.

    It runs in a scratch directory unless ``cwd`` says otherwise: fairseq writes relative
    defaults (``checkpoints/`` for --save-dir, created even by a run that then fails) into the
    working directory, and tests write nothing outside pytest's temporary directories.
    """
    command = [str(BIN / name), *map(str, args)]
    # The test models are tiny: one thread each is as fast and keeps parallel runs from
    # oversubscribing the cores.
    process_env = {"OMP_NUM_THREADS": "1", **os.environ, **(env or {})}
    if cwd is None:
        cwd = tempfile.mkdtemp(prefix="svae-test-cwd-", dir=os.environ.get("PYTEST_SCRATCH"))
    result = subprocess.run(command, capture_output=True, text=True, env=process_env, cwd=cwd)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} exited with {result.returncode}\n"
            f"--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-6000:]}"
        )
    return result


def json_log_records(text: str, tag: str):
    """The JSON stats fairseq prints with --log-format json for one tag (train_inner, valid, train)."""
    records = []
    for line in text.splitlines():
        marker = f"| {tag} | "
        if marker in line and line.rstrip().endswith("}"):
            records.append(json.loads(line.split(marker, 1)[1]))
    return records


def write_first_lines(source: Path, directory: Path, lines: dict) -> Path:
    """A corpus directory holding the first ``lines[split]`` lines of each of ``source``'s splits."""
    directory.mkdir(parents=True, exist_ok=True)
    for split, count in lines.items():
        with open(source / f"{split}.txt", encoding="utf-8") as handle:
            head = [next(handle) for _ in range(count)]
        (directory / f"{split}.txt").write_text("".join(head), encoding="utf-8")
    return directory


@pytest.fixture(scope="session")
def brown_slice(tmp_path_factory) -> Path:
    """Plain-text slice of Brown: the first lines of each split."""
    root = tmp_path_factory.mktemp("brown-slice")
    return write_first_lines(brown_text_dir(root), root, SLICE_LINES)


@pytest.fixture(scope="session")
def data_bin(brown_slice) -> Path:
    destination = brown_slice / "data-bin"
    run_command(
        "fairseq-preprocess", "--only-source",
        "--trainpref", brown_slice / "train.txt", "--validpref", brown_slice / "valid.txt",
        "--testpref", brown_slice / "test.txt", "--thresholdsrc", "3", "--destdir", destination,
    )
    return destination


def train_args(data_dir: Path, save_dir: Path, *extra) -> list:
    """A fairseq-train command line for a small model on the slice."""
    return [
        data_dir, "--user-dir", PLUGIN_DIR, "--task", "sentence_vae", *SMALL_MODEL,
        "--criterion", "annealed_elbo", "--optimizer", "adam", "--lr", "2e-3",
        "--max-tokens", "2000", "--cpu", "--save-dir", save_dir, "--log-format", "json",
        "--log-interval", "5", "--seed", TRAIN_SEED, "--num-workers", "0", *extra,
    ]


@pytest.fixture(scope="session")
def trained_model(data_bin, tmp_path_factory):
    """A small model trained for 3 epochs; returns (save_dir, fairseq-train stdout+stderr)."""
    save_dir = tmp_path_factory.mktemp("trained")
    result = run_command(
        "fairseq-train",
        *train_args(data_bin, save_dir, "--max-epoch", "3", "--kl-schedule", "linear",
                    "--kl-anneal-updates", "40", "--no-epoch-checkpoints"),
    )
    return save_dir, result.stdout + result.stderr


@pytest.fixture(scope="session")
def trained_language_model(data_bin, tmp_path_factory) -> Path:
    """A tiny fairseq lstm_lm trained for 2 epochs on the slice; returns its checkpoint_best.pt.

    ``--user-dir`` only makes fairseq load the checkpoint with the weights-only protection on.
    """
    save_dir = tmp_path_factory.mktemp("lstm_lm")
    run_command(
        "fairseq-train", data_bin, "--user-dir", PLUGIN_DIR, "--task", "language_modeling",
        "--sample-break-mode", "eos", "--arch", "lstm_lm", "--decoder-embed-dim", "32",
        "--decoder-hidden-size", "48", "--decoder-out-embed-dim", "48", "--dropout", "0.1",
        "--optimizer", "adam", "--lr", "5e-3", "--max-tokens", "2000", "--max-epoch", "2",
        "--cpu", "--save-dir", save_dir, "--no-epoch-checkpoints", "--seed", TRAIN_SEED,
        "--num-workers", "0",
    )
    return save_dir / "checkpoint_best.pt"


# --- Generation (issue 4) -------------------------------------------------------------------
# A model whose z tells sentences apart, so that reconstructions, prior samples and interpolation
# paths differ measurably: few short training sentences with every word in the dictionary, free
# bits (1 nat per dimension kept free of KL pressure, no annealing) and a bidirectional encoder,
# trained well into memorisation (about 40 s on one core). 120 epochs, not 60: at 60 some training
# seeds had not yet memorised (greedy reconstruction BLEU 10 for seed 11 at 60 epochs, 65 at 120).
SHORT_SENTENCES = {"train": 300, "valid": 30}
LATENT_MODEL = [
    "--arch", "sentence_vae", "--encoder-embed-dim", "64", "--encoder-hidden-size", "128",
    "--latent-dim", "16", "--encoder-bidirectional", "--dropout", "0.0",
]


@pytest.fixture(scope="session")
def short_sentences_bin(brown_slice) -> Path:
    """The first 3-12 word sentences of the slice, binarized with every word in the dictionary."""
    root = brown_slice / "short"
    root.mkdir(exist_ok=True)
    for split, count in SHORT_SENTENCES.items():
        lines = (brown_slice / f"{split}.txt").read_text(encoding="utf-8").splitlines()
        short = [line for line in lines if 3 <= len(line.split()) <= 12][:count]
        assert len(short) == count
        (root / f"{split}.txt").write_text("\n".join(short) + "\n", encoding="utf-8")
    destination = root / "data-bin"
    run_command(
        "fairseq-preprocess", "--only-source", "--trainpref", root / "train.txt",
        "--validpref", root / "valid.txt", "--thresholdsrc", "1", "--destdir", destination,
    )
    return destination


@pytest.fixture(scope="session")
def latent_model(short_sentences_bin, tmp_path_factory) -> Path:
    """checkpoint_last.pt of a model that uses z (checkpoint_best.pt would be an early epoch:
    memorising the training sentences raises the validation loss)."""
    save_dir = tmp_path_factory.mktemp("latent-model")
    run_command(
        "fairseq-train", short_sentences_bin, "--user-dir", PLUGIN_DIR, "--task", "sentence_vae",
        *LATENT_MODEL, "--criterion", "annealed_elbo", "--free-bits", "1.0", "--kl-schedule", "constant",
        "--optimizer", "adam", "--lr", "5e-3", "--max-tokens", "300", "--max-epoch", "120",
        "--cpu", "--save-dir", save_dir, "--seed", TRAIN_SEED, "--num-workers", "0",
        "--no-epoch-checkpoints", "--no-save-optimizer-state", "--log-format", "json",
    )
    return save_dir / "checkpoint_last.pt"


@pytest.fixture(scope="session")
def greedy_reconstruction(short_sentences_bin, latent_model):
    """fairseq-generate's greedy reconstruction of the 300 training sentences, with sacreBLEU."""
    from generation_helpers import generate

    return generate(short_sentences_bin, latent_model, "--gen-subset", "train", "--beam", "1",
                    "--scoring", "sacrebleu", "--batch-size", "64")


@pytest.fixture(scope="session")
def latent_hub(short_sentences_bin, latent_model):
    from fairseq_svae import SentenceVAEModel

    return SentenceVAEModel.from_pretrained(
        latent_model.parent, checkpoint_file=latent_model.name, data_name_or_path=str(short_sentences_bin)
    )


@pytest.fixture
def one_torch_thread():
    """In-process inference with the tiny test models on one thread: on a shared 2-core machine a
    second thread mostly waits for the first (an LSTM step measured 5x slower with two)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session", autouse=True)
def scratch_directory(tmp_path_factory):
    """Where run_command's scratch working directories go: under pytest's temporary root."""
    root = tmp_path_factory.mktemp("command-cwd")
    previous = os.environ.get("PYTEST_SCRATCH")
    os.environ["PYTEST_SCRATCH"] = str(root)
    yield root
    if previous is None:
        os.environ.pop("PYTEST_SCRATCH", None)
    else:
        os.environ["PYTEST_SCRATCH"] = previous


def repository_files():
    """Every file and folder under the repository except the ones tools keep there on purpose.

    runs/ is where the example scripts put a user's own trainings (ignored by git); one may be
    running beside the tests."""
    kept = {".git", ".venv", ".pytest_cache", "__pycache__", "runs"}
    found = set()
    for root, folders, files in os.walk(REPO):
        folders[:] = [folder for folder in folders if folder not in kept and not folder.endswith(".egg-info")]
        relative = Path(root).relative_to(REPO)
        found.update(str(relative / name) for name in folders + files)
    return found


@pytest.fixture(scope="session", autouse=True)
def nothing_written_into_the_repository():
    """Fails the session if a test created or removed anything in the repository."""
    before = repository_files()
    yield
    after = repository_files()
    assert after == before, (
        f"tests changed the repository tree: added {sorted(after - before)[:10]}, "
        f"removed {sorted(before - after)[:10]}"
    )
