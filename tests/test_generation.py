"""fairseq-generate with the plugin: reconstruction with sacreBLEU, prior samples, svae-interpolate.

Everything runs the real commands on a real checkpoint (the ``latent_model`` fixture: a small model
trained on 300 short Brown sentences, whose z tells sentences apart).
"""

import math

import pytest
import sacrebleu
import torch

from fairseq_svae.generation import latent_batch
from fairseq_svae.generation.latent_space import interpolation_path
from fairseq_svae.models.sentence_vae_encoder import LATENT

from conftest import run_command
from generation_helpers import generate, read_lines

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PRIOR = ("--sample-from-prior", "--prior-samples")


def training_sentences(short_sentences_bin):
    return read_lines(short_sentences_bin.parent / "train.txt")


def test_reconstruction_bleu_of_training_sentences_is_far_above_prior_samples(
        short_sentences_bin, latent_model, greedy_reconstruction):
    sentences = training_sentences(short_sentences_bin)
    recon = greedy_reconstruction
    # Every sentence is reconstructed (fairseq 0.12 would drop a last batch of 300 % 64 = 44),
    # with fairseq's usual lines: S- and T- are the sentence itself.
    assert sorted(recon.hypotheses) == list(range(len(sentences)))
    assert [recon.targets[i] for i in range(len(sentences))] == sentences
    assert [recon.sources[i] for i in range(len(sentences))] == sentences
    ours = sacrebleu.corpus_bleu(recon.in_order(), [sentences]).score
    assert recon.bleu == pytest.approx(ours, abs=0.01)  # what --scoring sacrebleu printed

    prior = generate(short_sentences_bin, latent_model, *PRIOR, str(len(sentences)), "--beam", "1")
    prior_bleu = sacrebleu.corpus_bleu(prior.in_order(), [sentences]).score
    # Decoding each sentence's own posterior mean recovers much of it; sentences decoded from
    # the prior share only chance n-grams with the same references.
    assert ours > 20
    assert ours > prior_bleu + 15 and ours > 5 * prior_bleu


def test_bf16_autocast_decodes_every_sentence_about_as_fp32_does(short_sentences_bin, latent_model,
                                                                 greedy_reconstruction):
    # fairseq-generate --bf16-autocast: the task's inference step runs under the bf16 autocast
    # (the search reads fp32 scores). bf16 rounds the logits to about 3 significant digits, which
    # can flip a near-tie and change a sentence's continuation, so the check is a margin.
    sentences = training_sentences(short_sentences_bin)
    bf16 = generate(short_sentences_bin, latent_model, "--gen-subset", "train", "--beam", "1",
                    "--scoring", "sacrebleu", "--batch-size", "64", "--bf16-autocast")
    assert sorted(bf16.hypotheses) == list(range(len(sentences)))
    assert all(math.isfinite(score) for score in bf16.scores.values())
    assert bf16.bleu == pytest.approx(greedy_reconstruction.bleu, abs=8)
    same = [i for i in bf16.hypotheses if bf16.hypotheses[i] == greedy_reconstruction.hypotheses[i]]
    assert len(same) >= 0.8 * len(sentences)
    for i in same:  # one sentence's score: the mean log-probability of its words, to bf16's precision
        assert bf16.scores[i] == pytest.approx(greedy_reconstruction.scores[i], abs=0.05)


def test_beam_search_and_sampling_reconstruct_every_sentence(short_sentences_bin, latent_model,
                                                              greedy_reconstruction):
    sentences = training_sentences(short_sentences_bin)
    beam = generate(short_sentences_bin, latent_model, "--gen-subset", "train", "--beam", "5",
                    "--scoring", "sacrebleu")
    assert sorted(beam.hypotheses) == list(range(len(sentences)))
    assert beam.bleu > 20
    assert sacrebleu.corpus_bleu(beam.in_order(), [sentences]).score == pytest.approx(beam.bleu, abs=0.01)

    sampled = generate(short_sentences_bin, latent_model, "--gen-subset", "train", "--beam", "1",
                       "--sampling", "--sampling-topk", "5", "--temperature", "0.7", "--seed", "2")
    assert sorted(sampled.hypotheses) == list(range(len(sentences)))
    assert sampled.in_order() != greedy_reconstruction.in_order()


def test_prior_samples_are_reproducible_with_a_seed_whatever_the_batching(short_sentences_bin, latent_model):
    first = generate(short_sentences_bin, latent_model, *PRIOR, "40", "--beam", "1", "--seed", "1")
    # 40 samples in batches of 7: sample i keeps its z, and the last batch of 5 is not dropped.
    again = generate(short_sentences_bin, latent_model, *PRIOR, "40", "--beam", "1", "--seed", "1",
                     "--batch-size", "7")
    other = generate(short_sentences_bin, latent_model, *PRIOR, "40", "--beam", "1", "--seed", "2")

    assert sorted(first.hypotheses) == list(range(40))
    assert not first.sources and not first.targets  # nothing was read: no S-/T- lines, no BLEU
    assert first.bleu is None and "BLEU" not in first.output
    assert again.hypotheses == first.hypotheses
    assert sum(first.hypotheses[i] != other.hypotheses[i] for i in range(40)) >= 20
    # Different z decode to different sentences.
    assert len(set(first.hypotheses.values())) >= 15


def test_prior_samples_with_sampling_and_beam_search(short_sentences_bin, latent_model):
    sampling = (*PRIOR, "30", "--beam", "1", "--sampling", "--sampling-topp", "0.9")
    first = generate(short_sentences_bin, latent_model, *sampling, "--seed", "5")
    again = generate(short_sentences_bin, latent_model, *sampling, "--seed", "5")
    other = generate(short_sentences_bin, latent_model, *sampling, "--seed", "6")
    assert first.hypotheses == again.hypotheses
    assert first.hypotheses != other.hypotheses

    beam = generate(short_sentences_bin, latent_model, *PRIOR, "30", "--beam", "5", "--seed", "5",
                    "--batch-size", "8")
    assert sorted(beam.hypotheses) == list(range(30))
    assert all(math.isfinite(score) for score in beam.scores.values())


def test_reconstruction_from_a_posterior_sample_is_seeded(short_sentences_bin, latent_model,
                                                          greedy_reconstruction):
    sentences = training_sentences(short_sentences_bin)
    options = ("--gen-subset", "train", "--beam", "1", "--reconstruct-from", "posterior_sample")
    first = generate(short_sentences_bin, latent_model, *options, "--seed", "1")
    again = generate(short_sentences_bin, latent_model, *options, "--seed", "1", "--batch-size", "17")
    other = generate(short_sentences_bin, latent_model, *options, "--seed", "2")
    assert first.hypotheses == again.hypotheses  # per-sentence noise, not per-batch
    assert first.hypotheses != other.hypotheses
    assert first.hypotheses != greedy_reconstruction.hypotheses  # not the posterior mean
    # A draw from q(z|x) still lands near the sentence.
    assert sacrebleu.corpus_bleu(first.in_order(), [sentences]).score > 10


def argmax_path(model, latent, max_len):
    """Greedy decoding written out: full forward over the whole prefix at every step (no
    incremental state), with fairseq's constraints (never <pad>; no </s> before one word)."""
    dictionary = model.decoder.dictionary
    tokens, scores = [dictionary.eos()], []
    for step in range(max_len + 1):
        logits, _ = model.decoder(torch.tensor([tokens]), encoder_out={LATENT: latent[None]})
        lprobs = torch.log_softmax(logits[0, -1].float(), dim=-1)
        lprobs[dictionary.pad()] = -math.inf
        if step == 0:
            lprobs[dictionary.eos()] = -math.inf
        if step == max_len:
            lprobs[torch.arange(len(dictionary)) != dictionary.eos()] = -math.inf
        best = int(lprobs.argmax())
        tokens.append(best)
        scores.append(float(lprobs[best]))
        if best == dictionary.eos():
            break
    return tokens[1:], scores


def test_greedy_decoding_from_z_is_the_argmax_path_and_steps_one_token_at_a_time(latent_hub):
    model = latent_hub.model
    latents = latent_hub.prior_latents(12, seed=4)
    max_len = 25
    generator = latent_hub.build_generator(beam=1, max_len_b=max_len)
    steps_seen = []
    hook = model.decoder.lstm.register_forward_pre_hook(lambda module, args: steps_seen.append(args[0].size(0)))
    try:
        with torch.no_grad():
            hypos = latent_hub.task.inference_step(
                generator, latent_hub.models, latent_batch(torch.arange(12), model.decoder.dictionary.eos(), latents)
            )
    finally:
        hook.remove()
    # The decoder's incremental state carries (h, c): every LSTM call reads one new token, and
    # there is one call per generated position of the longest sentence (batched).
    longest = max(len(hypo[0]["tokens"]) for hypo in hypos)
    assert steps_seen == [1] * longest

    with torch.no_grad():
        for row, hypo in enumerate(hypos):
            tokens, scores = argmax_path(model, latents[row], max_len)
            assert hypo[0]["tokens"].tolist() == tokens
            assert hypo[0]["positional_scores"].tolist() == pytest.approx(scores, abs=1e-4)


def test_svae_interpolate_decodes_the_path_from_one_reconstruction_to_the_other(
        short_sentences_bin, latent_model, latent_hub):
    sentences = training_sentences(short_sentences_bin)
    first, second = 3, 10
    means, _ = latent_hub.encode([sentences[first], sentences[second]])
    for spherical in (False, True):
        result = run_command("svae-interpolate", short_sentences_bin, "--path", latent_model, "--cpu",
                             "--steps", "6", *(["--spherical"] if spherical else []),
                             sentences[first], sentences[second])
        lines = result.stdout.splitlines()
        assert len(lines) == 6
        # The endpoints are the two posterior means: the two sentences' reconstructions (decoded
        # as the hub decodes a code, with shared sampling noise: the same code, the same sentence).
        assert [lines[0], lines[-1]] == latent_hub.reconstruct([sentences[first], sentences[second]])
        # Every step is the decoding of its point on the path (lerp or slerp) between them.
        path = interpolation_path(means[0], means[1], 6, spherical=spherical)
        assert not torch.equal(path[1], path[0]) and not torch.equal(path[-2], path[-1])
        assert lines == latent_hub.decode_latents(path)


def test_svae_interpolate_reports_bad_input_in_one_line(short_sentences_bin, latent_model, tmp_path):
    def interpolate(*args):
        return run_command("svae-interpolate", short_sentences_bin, "--path", latent_model, "--cpu",
                           *args, check=False)

    empty = interpolate("", "the jury said .")
    assert empty.returncode == 1 and not empty.stdout
    assert empty.stderr.splitlines()[-1].startswith(
        "svae-interpolate: error: SentenceInputError: the first sentence is empty")
    assert "Traceback" not in empty.stderr

    too_long = interpolate("the " * 201 + ".", "the jury said .")
    assert too_long.returncode == 1 and "Traceback" not in too_long.stderr
    assert "the first sentence has 202 tokens, more than this model's max_sentence_length of 200" in too_long.stderr
    assert "--max-sentence-length 202" in too_long.stderr
    allowed = interpolate("--max-sentence-length", "202", "--steps", "2", "the " * 201 + ".", "the jury said .")
    assert allowed.returncode == 0 and len(allowed.stdout.splitlines()) == 2

    missing = run_command("svae-interpolate", short_sentences_bin, "--path", tmp_path / "none.pt", "--cpu",
                          "a", "b", check=False)
    assert missing.returncode == 1
    assert missing.stderr.splitlines()[-1].startswith(
        f"svae-interpolate: error: MissingCheckpointError: checkpoint '{tmp_path / 'none.pt'}' not found")
    assert "Traceback" not in missing.stderr

    one_sentence = interpolate("just one")
    assert one_sentence.returncode == 2 and "expected 2 sentences" in one_sentence.stderr
    few_steps = interpolate("--steps", "1", "a", "b")
    assert few_steps.returncode == 1
    assert few_steps.stderr.splitlines()[-1] == (
        "svae-interpolate: error: OptionError: --steps must be at least 2 (the two endpoints), got 1")
