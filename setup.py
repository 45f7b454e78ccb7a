"""fairseq-svae: the Sentence VAE (Bowman et al. 2016) as a fairseq plugin."""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="fairseq-svae",
    version="0.1.0",
    description="Sentence VAE (Bowman et al. 2016) for fairseq: model, annealed-ELBO criterion, "
                "task, prior-sampling generator and honest evaluation",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    packages=find_packages(include=["fairseq_svae", "fairseq_svae.*"]),
    install_requires=[
        # fairseq 0.12.2 cannot be imported on Python >= 3.11 (dataclass defaults);
        # fairseq-fixed is the same code with that patched.
        "fairseq-fixed==0.12.3.1; python_version >= '3.11'",
        "fairseq==0.12.2; python_version < '3.11'",
        # An exact torch pin: a range would let pip resolve a newer (CUDA) build of several GB
        # on a CPU-only machine. 2.13.0 matches the local CPU wheel (2.13.0+cpu).
        "torch==2.13.0",
        # fairseq depends on torchaudio; this release declares no torch pin of its own,
        # so it cannot drag in another torch.
        "torchaudio==2.11.0",
        # fairseq 0.12 uses np.compat / np.int, which numpy 2 removed.
        "numpy<2",
        "sentencepiece>=0.1.99",
        "sacrebleu>=2.0",
        # svae-report's probes of what z holds: logistic regressions, TF-IDF, PCA and t-SNE.
        "scikit-learn>=1.2",
    ],
    extras_require={
        # scripts/plot_training.py and svae-report --latent-map draw with matplotlib; nothing
        # else in the plugin needs it.
        "plot": ["matplotlib>=3.5"],
        "test": ["pytest>=7", "matplotlib>=3.5"],
    },
    entry_points={
        "console_scripts": [
            "svae-user-dir = fairseq_svae.cli.user_dir:main",
            "svae-interpolate = fairseq_svae.cli.interpolate:cli_main",
            "svae-eval = fairseq_svae.cli.evaluate:cli_main",
            "svae-report = fairseq_svae.cli.report:cli_main",
            "svae-impute = fairseq_svae.cli.impute:cli_main",
            "svae-fit-prior = fairseq_svae.cli.fit_prior:cli_main",
            "svae-translation-eval = fairseq_svae.cli.translation_eval:cli_main",
        ],
    },
)
