from fairseq_svae.models import sentence_cvae, sentence_vae  # noqa: F401  (registers --arch sentence_vae*, sentence_cvae)
