"""scripts/plot_training.py on the JSON log of a real fairseq-train run."""

import importlib.util
import json
import os
import struct
import subprocess
import sys

from conftest import REPO, json_log_records

SCRIPT = REPO / "scripts" / "plot_training.py"
CURVES = ("nll", "kl", "neg_elbo", "kl_weight")


def load_script():
    spec = importlib.util.spec_from_file_location("plot_training", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def expected_points(records, prefix=""):
    return {
        name: [(float(r[prefix + "num_updates"]), float(r[prefix + name])) for r in records
               if prefix + name in r]
        for name in CURVES
    }


def test_reads_the_training_and_validation_records_of_fairseq_output(trained_model):
    _, log = trained_model
    series = load_script().read_training_log(log.splitlines())
    inner, valid = json_log_records(log, "train_inner"), json_log_records(log, "valid")
    assert series["train"] == expected_points(inner)
    assert {k: v for k, v in series["valid"].items() if k != "kl_weight"} == {
        k: v for k, v in expected_points(valid, "valid_").items() if k != "kl_weight"}
    assert len(series["train"]["kl_weight"]) == len(inner) >= 6
    assert len(series["valid"]["nll"]) == 3  # one per epoch


def test_a_log_file_with_repeated_records_gives_one_point_per_update(trained_model):
    # fairseq 0.12 writes epoch e's records e times into --log-file, as bare JSON lines after
    # the configuration (a Python dict, not JSON).
    _, log = trained_model
    inner, valid = json_log_records(log, "train_inner"), json_log_records(log, "valid")
    lines = ["{'_name': None, 'common': {'log_format': 'json'}}"]
    for record in inner + valid:
        lines += [json.dumps(record)] * int(record["epoch"])
    series = load_script().read_training_log(lines)
    assert series["train"] == expected_points(inner)
    assert series["valid"]["neg_elbo"] == expected_points(valid, "valid_")["neg_elbo"]


def png_size(path):
    with open(path, "rb") as handle:
        header = handle.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def test_draws_a_png_from_a_log_file(trained_model, tmp_path):
    _, log = trained_model
    log_file = tmp_path / "train.log"
    log_file.write_text(log, encoding="utf-8")
    result = subprocess.run([sys.executable, str(SCRIPT), str(log_file), "--title", "test run"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    inner, valid = json_log_records(log, "train_inner"), json_log_records(log, "valid")
    assert f"{len(inner)} training and {len(valid)} validation points" in result.stdout
    assert png_size(tmp_path / "train.png") == (800, 700)  # 8 x 7 inches at 100 dpi
    assert os.path.getsize(tmp_path / "train.png") > 20_000  # curves, labels and legends


def test_says_how_to_install_matplotlib_when_it_is_missing(trained_model, tmp_path):
    _, log = trained_model
    (tmp_path / "train.log").write_text(log, encoding="utf-8")
    blocker = tmp_path / "no_matplotlib" / "matplotlib"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('No module named matplotlib')\n")
    env = dict(os.environ, PYTHONPATH=str(blocker.parent))
    result = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "train.log")],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 1
    assert "pip install 'fairseq-svae[plot]'" in result.stderr
    assert not (tmp_path / "train.png").exists()


def test_a_log_without_training_records_is_refused(tmp_path):
    empty = tmp_path / "empty.log"
    empty.write_text("2026-01-01 | INFO | fairseq_cli.train | nothing here\n", encoding="utf-8")
    result = subprocess.run([sys.executable, str(SCRIPT), str(empty)], capture_output=True, text=True)
    assert result.returncode == 1
    assert "no training records" in result.stderr and "--log-format json" in result.stderr
