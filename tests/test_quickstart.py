"""The README's main command: the quick start on the shipped pretrained model, as a new user runs it."""

import subprocess
import sys

from conftest import REPO

from fairseq_svae.text_statistics import has_repeated_ngram


def test_the_quick_start_prints_sentences_of_the_pretrained_model(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "examples" / "brown" / "quickstart.py")], cwd=tmp_path,
                            capture_output=True, text=True, env={"OMP_NUM_THREADS": "1", "PATH": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    sections = result.stdout.split("\n== ")
    assert sections[0].startswith("loaded ") and "13-d latent code, 19280 words" in sections[0]
    titles = [section.splitlines()[0] for section in sections[1:]]
    assert [title.split(" ")[0] for title in titles] == ["sentences", "test", "a", "missing"]

    samples = sections[1].splitlines()[1:9]
    assert len(samples) == 8 and all(line.startswith("  ") and line.strip() for line in samples)
    for sample in samples:  # the prior's default decoding: no <unk>, no repeated 3-gram
        words = sample.split()
        assert "<unk>" not in words and not has_repeated_ngram(words, 3)

    reconstructions = [line.strip()[3:] for line in sections[2].splitlines() if line.strip().startswith("->")]
    homotopy = [line.strip() for line in sections[3].splitlines()[1:] if line.strip()]
    assert len(reconstructions) == 4 and len(homotopy) == 7
    # The path starts at the code of the first test sentence shown: its reconstruction (shared noise).
    assert homotopy[0] == reconstructions[0]
    beginnings = [line.strip()[: -len(" ...")] for line in sections[4].splitlines() if line.strip().endswith(" ...")]
    completions = [line.strip()[3:] for line in sections[4].splitlines() if line.strip().startswith("->")]
    assert len(beginnings) == len(completions) == 3
    assert all(c.startswith(b) for b, c in zip(beginnings, completions))
