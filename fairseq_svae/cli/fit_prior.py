#!/usr/bin/env python3 -u
"""``svae-fit-prior``: fit a Gaussian mixture to where a trained model's codes lie.

    svae-fit-prior data-bin/captions --path checkpoints/checkpoint_best.pt

encodes ``--fit-sentences`` sentences of ``--fit-subset`` (train) to their posterior means,
fits a ``--components``-component full-covariance Gaussian mixture to them (Ghosh et al. 2020)
and writes it beside the checkpoint as ``NAME.prior.pt`` (``--output`` to choose). Sampling
paths take it with ``--fitted-prior FILE`` (fairseq-generate --sample-from-prior, svae-report)
or ``from_pretrained(..., fitted_prior=FILE)``. It prints the mean log density of the codes of
``--gen-subset`` (valid) under N(0, I) and under the mixture: how far the codes lie from the
prior the model was trained against.
"""

import logging
import os

import numpy as np
import torch
from fairseq import options

import fairseq_svae  # noqa: F401  (registers the task before fairseq builds its parser)
from fairseq_svae.cli.sentence_commands import fairseq_config, generation_parser, quiet_logging
from fairseq_svae.errors import OptionError, exit_on_user_error
from fairseq_svae.evaluation.inputs import load_split
from fairseq_svae.fitted_prior import fit_gaussian_mixture, fitted_prior_path, standard_normal_log_density
from fairseq_svae.hub_interface import SentenceVAEHubInterface
from fairseq_svae.sample_report import choose_sentences

PROG = "svae-fit-prior"
logger = logging.getLogger(PROG)


def build_parser():
    parser = generation_parser(PROG, __doc__.split("\n\n")[0])
    parser.set_defaults(gen_subset="valid")
    group = parser.add_argument_group("Fitted prior")
    # fmt: off
    group.add_argument("--components", type=int, default=32, metavar="K",
                       help="Gaussian components of the mixture")
    group.add_argument("--fit-subset", default="train", metavar="SPLIT",
                       help="the split whose codes the mixture is fitted to")
    group.add_argument("--fit-sentences", type=int, default=20000, metavar="N",
                       help="fit to at most N sentences of --fit-subset (a seeded choice)")
    group.add_argument("--output", default=None, metavar="FILE",
                       help="where to write the prior (default: NAME.prior.pt beside --path NAME.pt)")
    # fmt: on
    return parser


def main(argv=None) -> dict:
    parser = build_parser()
    args = options.parse_args_and_arch(parser, argv)
    quiet_logging()
    if args.path is None:
        raise OptionError("a checkpoint is needed: --path SAVE_DIR/checkpoint_best.pt")
    if args.fit_sentences < 1:
        raise OptionError(f"--fit-sentences must be >= 1, got {args.fit_sentences}")
    output = args.output or fitted_prior_path(args.path)
    hub = SentenceVAEHubInterface.from_command_line(fairseq_config(args))

    _, fit_split = load_split(args.data, args.fit_subset)
    chosen = choose_sentences(args.fit_sentences, len(fit_split), args.seed)
    codes = hub.posterior_means([fit_split[i]["source"] for i in chosen])
    prior = fit_gaussian_mixture(codes, args.components, seed=args.seed)
    prior.info.update(checkpoint=os.path.abspath(args.path), fit_subset=args.fit_subset)

    _, held_out = load_split(args.data, args.gen_subset)
    held_out_codes = torch.from_numpy(
        hub.posterior_means([held_out[i]["source"] for i in choose_sentences(5000, len(held_out), args.seed)]))
    figures = {
        "components": prior.components, "codes": len(chosen),
        "fit_mean_log_density": prior.info["mean_log_density"],
        "held_out_split": args.gen_subset,
        "held_out_log_density_fitted": float(prior.log_density(held_out_codes).mean()),
        "held_out_log_density_standard_normal": float(standard_normal_log_density(held_out_codes).mean()),
        "code_norm_mean": float(np.linalg.norm(codes, axis=1).mean()),
        "standard_normal_norm_mean": float(np.sqrt(hub.latent_dim)),
    }
    prior.info.update(figures)
    prior.save(output)
    print(f"{output}: {prior.components} components fitted to the posterior means of {len(chosen)} "
          f"{args.fit_subset} sentences ({'converged' if prior.info['converged'] else 'not converged'} "
          f"after {prior.info['iterations']} EM iterations)")
    print(f"mean log density of {args.gen_subset} codes: {figures['held_out_log_density_fitted']:.2f} nats "
          f"under the fitted prior, {figures['held_out_log_density_standard_normal']:.2f} under N(0, I); "
          f"mean code norm {figures['code_norm_mean']:.2f} (N(0, I): about {figures['standard_normal_norm_mean']:.2f})")
    return figures


def cli_main():
    exit_on_user_error(main, PROG)


if __name__ == "__main__":
    cli_main()
