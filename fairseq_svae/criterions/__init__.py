from fairseq_svae.criterions import annealed_elbo  # noqa: F401  (registers --criterion annealed_elbo)
