"""fairseq-svae: the Sentence VAE of Bowman et al. (2016) as a fairseq plugin.

Importing the package (which ``--user-dir fairseq_svae`` does) registers the ``sentence_vae``
model, task and architectures and the ``annealed_elbo`` criterion, and makes fairseq load
checkpoints with torch's weights-only protection on and save them whole (see
:mod:`fairseq_svae.checkpoint_io`), lets one fairseq-train run at a time save into a directory
(see :mod:`fairseq_svae.save_dir_lock`), checks the save directory, a resumed checkpoint, the
binarized splits and the loss for what fairseq would report with a traceback (see
:mod:`fairseq_svae.startup_checks`), runs fairseq on several CPU processes as torchrun, fairseq's
own spawn or ranks started by hand start them, each stopping in one line when a peer is lost (see
:mod:`fairseq_svae.cpu_ranks`), and, in the processes of fairseq's and the plugin's
commands only, prints the plugin's errors for users without a traceback and silences warnings
users cannot act on (see :mod:`fairseq_svae.command_line`).
"""

import logging

# fairseq's text-to-speech task logs at import that tensorboardX is missing; nothing here uses it,
# so the plugin's own commands (which import fairseq through this package) leave the line out.
logging.getLogger("fairseq.tasks.text_to_speech").setLevel(logging.WARNING)

from fairseq_svae import checkpoint_io, command_line, cpu_ranks, save_dir_lock, startup_checks  # noqa: E402

checkpoint_io.install()
save_dir_lock.install()
startup_checks.install()  # after save_dir_lock: its save-dir check runs before the lock is taken
command_line.install()
cpu_ranks.install()

from fairseq_svae import criterions, models, optim, tasks  # noqa: E402  (registration)
from fairseq_svae.generation import latent_samples  # noqa: E402

latent_samples.install()  # fairseq-generate --latent-samples for conditional VAEs (--task translation)

from fairseq_svae.models.sentence_cvae import SentenceCVAEModel  # noqa: E402
from fairseq_svae.models.sentence_vae import SentenceVAEModel  # noqa: E402

__all__ = ["SentenceCVAEModel", "SentenceVAEModel"]
