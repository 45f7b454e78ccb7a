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


def test_the_captions_quick_start_shows_samples_reconstructions_homotopy_and_attribute_shifts(tmp_path):
    """The README's main command: the shipped captions model with its fitted prior."""
    result = subprocess.run([sys.executable, str(REPO / "examples" / "captions" / "quickstart.py")], cwd=tmp_path,
                            capture_output=True, text=True, env={"OMP_NUM_THREADS": "1", "PATH": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    sections = result.stdout.split("\n== ")
    assert sections[0].startswith("loaded ") and "128-d latent code" in sections[0]
    titles = [section.splitlines()[0] for section in sections[1:]]
    assert [title.split(" ")[0] for title in titles] == ["captions", "captions", "test", "a", '"man"', '"red"']
    assert "fitted prior" in titles[0] and "N(0, I)" in titles[1]

    def indented(section):
        return [line.strip() for line in section.splitlines()[1:] if line.startswith("  ") and line.strip()]

    fitted, standard = indented(sections[1]), indented(sections[2])
    assert len(fitted) == 6 and len(standard) == 3
    for sample in fitted + standard:  # the prior's default decoding: no <unk>, no repeated 3-gram
        words = sample.split()
        assert words and "<unk>" not in words and not has_repeated_ngram(words, 3)

    def pairs(section):
        lines = indented(section)
        return list(zip(lines[0::2], [line[3:] for line in lines[1::2]]))

    reconstructions = pairs(sections[3])
    homotopy = indented(sections[4])
    assert len(reconstructions) == 4 and len(homotopy) == 7
    # The path runs between the codes of the first and the last caption shown: it starts and
    # ends at their reconstructions (a code decodes to one sentence: shared sampling noise).
    assert homotopy[0] == reconstructions[0][1] and homotopy[-1] == reconstructions[3][1]
    for section, source, target in ((sections[5], "man", "woman"), (sections[6], "red", "blue")):
        shifted = pairs(section)
        assert len(shifted) == 3
        for original, _ in shifted:  # captions with the source word and without the target word
            assert source in original.split() and target not in original.split()
