from fairseq_svae.optim import fused_adam  # noqa: F401  (registers --optimizer fused_adam)
