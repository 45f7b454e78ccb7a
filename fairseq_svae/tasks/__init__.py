from fairseq_svae.tasks import sentence_vae  # noqa: F401  (registers --task sentence_vae)
