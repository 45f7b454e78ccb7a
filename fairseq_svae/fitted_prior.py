"""A prior fitted to where a trained model's codes lie, to sample from instead of N(0, I).

At a high rate the aggregate posterior q(z) = E_x q(z|x) fills only part of N(0, I) (the KL
weight that holds the rate is below 1, so nothing pulls q(z) onto the prior), and codes drawn
from N(0, I) fall between the codes the decoder was trained on. Ghosh et al. (2020) fit a
Gaussian mixture to the codes of a trained deterministic autoencoder and sample from it; here
the mixture (scikit-learn's ``GaussianMixture``, full covariances) is fitted to the posterior
means of training sentences and saved beside the checkpoint.

The file holds tensors and plain numbers only, so it loads with torch's weights-only unpickler.
Draws use the per-sample random streams of :mod:`~fairseq_svae.generation.latent_draws`:
sample i under a seed is the same code whatever the batching.
"""

import math
import os
from dataclasses import dataclass, field
from typing import Iterable, Optional

import numpy as np
import torch
from torch import Tensor

from fairseq_svae.errors import IncompatibleCheckpointError, MissingCheckpointError, OptionError
from fairseq_svae.generation.latent_draws import sample_generators

FORMAT = "fairseq_svae.fitted_prior.gaussian_mixture"
VERSION = 1
# Added to each covariance's diagonal while fitting (scikit-learn's reg_covar): codes of a model
# whose posterior means hardly vary along a direction would otherwise give singular components.
COVARIANCE_FLOOR = 1e-4


def fitted_prior_path(checkpoint: str) -> str:
    """Where svae-fit-prior writes the prior of ``checkpoint`` by default: beside it,
    ``NAME.prior.pt`` for ``NAME.pt``."""
    root, _ = os.path.splitext(checkpoint)
    return root + ".prior.pt"


@dataclass
class FittedPrior:
    """A Gaussian mixture over z: component weights (K), means (K x d) and the lower Cholesky
    factors of the covariances (K x d x d)."""

    weights: Tensor
    means: Tensor
    scale_tril: Tensor
    info: dict = field(default_factory=dict)

    @property
    def latent_dim(self) -> int:
        return self.means.size(1)

    @property
    def components(self) -> int:
        return self.means.size(0)

    def latents(self, ids: Iterable[int], seed: int, device=None) -> Tensor:
        """One z per id: a component drawn by its weight, then its Gaussian, from id's stream."""
        cumulative = torch.cumsum(self.weights.double(), 0)
        codes = []
        for generator in sample_generators(ids, seed):
            uniform = torch.rand(1, generator=generator, dtype=torch.float64)
            component = min(int(torch.searchsorted(cumulative, uniform * cumulative[-1])), self.components - 1)
            noise = torch.randn(self.latent_dim, generator=generator)
            codes.append(self.means[component] + self.scale_tril[component] @ noise)
        latents = torch.stack(codes) if codes else torch.zeros(0, self.latent_dim)
        return latents if device is None else latents.to(device)

    def log_density(self, latents: Tensor) -> Tensor:
        """log p(z) under the mixture, per row (nats)."""
        mixture = torch.distributions.MixtureSameFamily(
            torch.distributions.Categorical(probs=self.weights.double()),
            torch.distributions.MultivariateNormal(self.means.double(), scale_tril=self.scale_tril.double()),
        )
        return mixture.log_prob(latents.double().cpu())

    def check_fits(self, latent_dim: int, path: str = "the fitted prior") -> None:
        if latent_dim != self.latent_dim:
            raise IncompatibleCheckpointError(
                f"{path} is a prior over {self.latent_dim}-dimensional codes, but the model's codes "
                f"have {latent_dim} dimensions: fit a prior to this model with svae-fit-prior DATA "
                f"--path CHECKPOINT"
            )

    def save(self, path: str) -> None:
        state = {"format": FORMAT, "version": VERSION, "weights": self.weights.float(),
                 "means": self.means.float(), "scale_tril": self.scale_tril.float(), "info": dict(self.info)}
        temporary = f"{path}.tmp-{os.getpid()}"
        try:
            torch.save(state, temporary)
            os.replace(temporary, path)  # never a half-written prior under the real name
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)

    @classmethod
    def load(cls, path: str) -> "FittedPrior":
        if not os.path.isfile(path):
            raise MissingCheckpointError(
                f"fitted prior {path!r} not found; fit one to a trained model with: "
                f"svae-fit-prior DATA --path CHECKPOINT (it writes CHECKPOINT_NAME.prior.pt beside it)"
            )
        from fairseq_svae.checkpoint_io import explain_load_error, verify_checkpoint_file

        file_format = verify_checkpoint_file(path)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # unsafe or unreadable pickles, explained as for checkpoints
            raise explain_load_error(path, error, file_format) from error
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise IncompatibleCheckpointError(
                f"{path} is not a fitted prior written by svae-fit-prior (format "
                f"{state.get('format') if isinstance(state, dict) else type(state).__name__!r})"
            )
        return cls(state["weights"], state["means"], state["scale_tril"], dict(state.get("info", {})))


def fit_gaussian_mixture(codes: np.ndarray, components: int, seed: int = 1, max_iter: int = 200) -> FittedPrior:
    """A ``components``-component full-covariance Gaussian mixture fitted to ``codes`` (n x d)."""
    from sklearn.mixture import GaussianMixture

    codes = np.asarray(codes, dtype=np.float64)
    if components < 1:
        raise OptionError(f"--components must be at least 1, got {components}")
    if codes.ndim != 2 or codes.shape[0] < 2 * components:
        raise OptionError(
            f"fitting {components} components needs at least {2 * components} codes, got {codes.shape[0]}: "
            f"pass fewer --components or more --fit-sentences"
        )
    mixture = GaussianMixture(n_components=components, covariance_type="full", reg_covar=COVARIANCE_FLOOR,
                              max_iter=max_iter, random_state=seed)
    mixture.fit(codes)
    info = {"components": components, "codes": int(codes.shape[0]), "converged": bool(mixture.converged_),
            "iterations": int(mixture.n_iter_), "mean_log_density": float(mixture.score(codes))}
    return FittedPrior(torch.from_numpy(mixture.weights_).float(), torch.from_numpy(mixture.means_).float(),
                       torch.from_numpy(np.linalg.cholesky(mixture.covariances_)).float(), info)


def standard_normal_log_density(latents: Tensor) -> Tensor:
    """log N(z; 0, I) per row (nats): the prior the model was trained against, for comparison."""
    latents = latents.double().cpu()
    return -0.5 * (latents.pow(2).sum(-1) + latents.size(-1) * math.log(2 * math.pi))


def load_fitted_prior(path: Optional[str], latent_dim: int) -> Optional[FittedPrior]:
    """The prior in ``path`` checked against the model's latent size (None without a path)."""
    if not path:
        return None
    prior = FittedPrior.load(path)
    prior.check_fits(latent_dim, path)
    return prior
