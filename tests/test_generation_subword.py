"""examples/brown/subword/run.sh end to end at toy scale: sentencepiece pieces in, plain text out,
and the hub reading raw text through the checkpoint's sentencepiece model."""

import os
import subprocess

import pytest
from fairseq.data import data_utils

from fairseq_svae import SentenceVAEModel

from conftest import BIN, REPO, run_command
from generation_helpers import parse_generate_output, read_lines

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SCRIPT = REPO / "examples" / "brown" / "subword" / "run.sh"
PIECE = "\u2581"  # sentencepiece's word-boundary mark


@pytest.fixture(scope="module")
def subword_run(brown_slice, tmp_path_factory):
    work = tmp_path_factory.mktemp("subword")
    env = dict(
        os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", OMP_NUM_THREADS="1",
        TEXT_DIR=str(brown_slice), WORK_DIR=str(work), VOCAB_SIZE="500", MAX_UPDATE="30",
        MODEL_ARGS="--arch sentence_vae --encoder-embed-dim 32 --encoder-hidden-size 64 --latent-dim 8",
    )
    result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, cwd=work)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return work, result.stdout


def test_generation_on_pieces_prints_plain_text(subword_run, brown_slice):
    work, summary = subword_run
    assert "== test-set reconstruction ==" in summary and "BLEU = " in summary
    reconstructed = parse_generate_output((work / "reconstruct-test.txt").read_text(encoding="utf-8"))
    test_lines = read_lines(brown_slice / "test.txt")
    assert sorted(reconstructed.hypotheses) == list(range(len(test_lines)))
    assert reconstructed.bleu is not None
    printed = list(reconstructed.hypotheses.values()) + list(reconstructed.targets.values())
    assert not any(PIECE in line for line in printed)
    # --post-process sentencepiece turns the references back into the original words (a test
    # line may hold a character the training text never had, which reads as <unk>).
    same = sum(reconstructed.targets[i] == line for i, line in enumerate(test_lines))
    assert same >= 0.95 * len(test_lines)

    prior = parse_generate_output((work / "prior-samples.txt").read_text(encoding="utf-8"))
    assert sorted(prior.hypotheses) == list(range(20))
    assert not any(PIECE in line for line in prior.hypotheses.values())


def test_hub_applies_the_checkpoint_sentencepiece_model_to_raw_text(subword_run, brown_slice):
    work, _ = subword_run
    hub = SentenceVAEModel.from_pretrained(work / "checkpoints", data_name_or_path=str(work / "data-bin"))
    assert hub.bpe is not None  # from the checkpoint's --bpe sentencepiece
    test_lines = read_lines(brown_slice / "test.txt")
    binarized = data_utils.load_indexed_dataset(str(work / "data-bin" / "test"), hub.dictionary)
    for index, line in enumerate(test_lines[:100]):
        tokens = hub.text_to_tokens(line)
        assert tokens.tolist() == binarized[index].tolist()  # the pieces fairseq-preprocess read
        if hub.dictionary.unk() not in tokens:
            assert hub.tokens_to_text(tokens) == line  # raw text round trip

    reconstructed = parse_generate_output((work / "reconstruct-test.txt").read_text(encoding="utf-8"))
    # run.sh decodes with fairseq-generate's plain beam search: the hub's defaults switched off.
    hub_output = hub.reconstruct(test_lines[:20], beam=5, no_repeat_ngram_size=0, unkpen=0)
    assert hub_output == [reconstructed.hypotheses[i] for i in range(20)]
    assert not any(PIECE in text for text in hub_output + hub.sample(5, seed=1))


def test_svae_interpolate_reads_raw_text_through_the_checkpoint_sentencepiece_model(subword_run, brown_slice):
    work, _ = subword_run
    first, second = read_lines(brown_slice / "test.txt")[:2]
    result = run_command("svae-interpolate", work / "data-bin", "--path", work / "checkpoints" / "checkpoint_best.pt",
                         "--cpu", "--beam", "5", "--no-repeat-ngram-size", "0", "--unkpen", "0", "--steps", "3",
                         first, second)
    lines = result.stdout.splitlines()
    reconstructed = parse_generate_output((work / "reconstruct-test.txt").read_text(encoding="utf-8"))
    # No --bpe on the command line: the pieces come from the checkpoint's --bpe sentencepiece.
    assert [lines[0], lines[-1]] == [reconstructed.hypotheses[0], reconstructed.hypotheses[1]]
    assert not any(PIECE in line for line in lines)
