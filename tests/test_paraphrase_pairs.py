"""examples/paraphrase/make_pairs.py: image captions in groups of five become English->English pairs."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from fairseq_svae.errors import USER_ERROR_EXIT_STATUS, MissingDataError

MAKE_PAIRS = Path(__file__).resolve().parents[1] / "examples" / "paraphrase" / "make_pairs.py"


def write_captions(directory: Path, images_per_split: int) -> None:
    """Caption j of image i of each split is "split i j", so every pair says where it came from."""
    directory.mkdir(parents=True, exist_ok=True)
    for split in ("train", "valid", "test"):
        lines = [f"{split} {image} {caption}" for image in range(images_per_split) for caption in range(5)]
        (directory / f"{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def make_pairs(monkeypatch, *args: str) -> None:
    """The script's main in this process (a process per call would import fairseq each time)."""
    spec = importlib.util.spec_from_file_location("make_pairs", MAKE_PAIRS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", ["make_pairs.py", *args])
    module.main()


def lines(path: Path):
    return path.read_text(encoding="utf-8").splitlines()


def test_pairs_link_every_caption_to_each_other_caption_of_its_image(tmp_path, monkeypatch):
    write_captions(tmp_path / "captions", images_per_split=3)
    make_pairs(monkeypatch, str(tmp_path / "captions"), str(tmp_path / "pairs"))
    out = tmp_path / "pairs"

    train = list(zip(lines(out / "train.src"), lines(out / "train.tgt")))
    assert len(train) == 3 * 20
    assert len(set(train)) == len(train)
    for source, target in train:
        assert source != target and source.split()[:2] == target.split()[:2]  # same image, other caption

    # valid: the first caption to each of the other four (the validation loss).
    valid = list(zip(lines(out / "valid.src"), lines(out / "valid.tgt")))
    assert valid[:4] == [("valid 0 0", f"valid 0 {k}") for k in range(1, 5)] and len(valid) == 12

    # test: one source a image, the second caption as the scored target, the other four as references.
    assert lines(out / "test.src") == [f"test {image} 0" for image in range(3)]
    assert lines(out / "test.tgt") == [f"test {image} 1" for image in range(3)]
    for k in range(1, 5):
        assert lines(out / f"test.ref{k}") == [f"test {image} {k}" for image in range(3)]


def test_image_limits_keep_the_first_images(tmp_path, monkeypatch):
    write_captions(tmp_path / "captions", images_per_split=4)
    make_pairs(monkeypatch, str(tmp_path / "captions"), str(tmp_path / "pairs"), "--train-images", "2",
               "--test-images", "1")
    assert {line.split()[1] for line in lines(tmp_path / "pairs" / "train.src")} == {"0", "1"}
    assert lines(tmp_path / "pairs" / "test.src") == ["test 0 0"]
    assert len(lines(tmp_path / "pairs" / "valid.src")) == 4


def test_an_incomplete_image_is_refused(tmp_path, monkeypatch):
    write_captions(tmp_path / "captions", images_per_split=2)
    (tmp_path / "captions" / "train.txt").write_text("a\nb\nc\n", encoding="utf-8")
    with pytest.raises(MissingDataError, match="has 3 lines, not 5 captions for each image"):
        make_pairs(monkeypatch, str(tmp_path / "captions"), str(tmp_path / "pairs"))


def test_a_missing_split_is_one_user_error_line(tmp_path):
    write_captions(tmp_path / "captions", images_per_split=2)
    (tmp_path / "captions" / "valid.txt").unlink()
    result = subprocess.run([sys.executable, str(MAKE_PAIRS), str(tmp_path / "captions"), str(tmp_path / "pairs")],
                            capture_output=True, text=True)
    assert result.returncode == USER_ERROR_EXIT_STATUS
    assert result.stderr.startswith("make_pairs.py: error: MissingDataError: ")
    assert "valid.txt not found" in result.stderr and "Traceback" not in result.stderr
