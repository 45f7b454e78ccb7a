"""Is this one checkpoint file, and does it hold a Sentence VAE? The one home of both checks.

fairseq-generate / fairseq-validate (through the task's ``build_model``), ``svae-eval``,
``svae-interpolate`` and the hub all refuse a missing file, an ensemble where one latent space is
needed, and another task's model with these errors, before any weight is loaded.
"""

import os
from typing import Optional, Tuple

from fairseq import checkpoint_utils, utils

from fairseq_svae.errors import IncompatibleCheckpointError, MissingCheckpointError


def checkpoint_file(path: str, option: str = "--path", remedy: Optional[str] = None) -> str:
    """The one existing checkpoint file ``path`` names (fairseq separates ensembles with ':').

    ``option`` is how the user gave it; ``remedy`` what the message tells them to pass instead.
    """
    paths = utils.split_paths(str(path))
    if len(paths) != 1:
        raise IncompatibleCheckpointError(
            f"{option} names {len(paths)} checkpoints ({path}); pass one: Sentence VAEs trained "
            f"separately do not share a latent space"
        )
    if not os.path.isfile(paths[0]):
        remedy = remedy or f"pass {option} SAVE_DIR/checkpoint_best.pt"
        raise MissingCheckpointError(
            f"checkpoint {paths[0]!r} not found; {remedy}, where SAVE_DIR is the --save-dir of a "
            f"fairseq-train run (it holds checkpoint_best.pt and checkpoint_last.pt)"
        )
    return paths[0]


def model_class_of(model_cfg) -> Tuple[Optional[str], Optional[type]]:
    """(--arch, registered model class) of a model configuration (Namespace or DictConfig)."""
    from fairseq.models import ARCH_MODEL_REGISTRY, MODEL_REGISTRY

    arch = getattr(model_cfg, "arch", None) or getattr(model_cfg, "_name", None)
    return arch, ARCH_MODEL_REGISTRY.get(arch) or MODEL_REGISTRY.get(arch)


def is_sentence_vae(model_cfg) -> bool:
    from fairseq.models import MODEL_REGISTRY

    _, model_class = model_class_of(model_cfg)
    # Looked up in fairseq's registry rather than imported: the model module imports the hub.
    return model_class is not None and issubclass(model_class, MODEL_REGISTRY["sentence_vae"])


def is_sentence_vae_model(model) -> bool:
    from fairseq.models import MODEL_REGISTRY

    return isinstance(model, MODEL_REGISTRY["sentence_vae"])


def sentence_vae_architectures():
    from fairseq.models import ARCH_MODEL_REGISTRY, MODEL_REGISTRY

    return sorted(name for name, cls in ARCH_MODEL_REGISTRY.items() if cls is MODEL_REGISTRY["sentence_vae"])


def require_sentence_vae(model_cfg, task_name: Optional[str] = None, path: Optional[str] = None) -> None:
    """Raise :class:`IncompatibleCheckpointError` unless ``model_cfg`` describes a Sentence VAE."""
    if is_sentence_vae(model_cfg):
        return
    arch, _ = model_class_of(model_cfg)
    written_by = f"fairseq-train --task {task_name} --arch {arch}" if task_name else f"--arch {arch}"
    raise IncompatibleCheckpointError(
        f"--task sentence_vae needs a Sentence VAE model ({', '.join(sentence_vae_architectures())}), "
        f"but {path or 'the checkpoint'} holds a model of {written_by}. Use a checkpoint written by "
        f"fairseq-train --task sentence_vae --arch sentence_vae_bowman (or another sentence_vae "
        f"architecture)."
    )


def saved_config(state: dict):
    """The training configuration stored in a checkpoint's state."""
    if state.get("cfg") is None and state.get("args") is not None:
        from fairseq.dataclass.utils import convert_namespace_to_omegaconf

        return convert_namespace_to_omegaconf(state["args"])
    return state["cfg"]


def load_sentence_vae_state(path: str, arg_overrides: Optional[dict] = None) -> dict:
    """A checkpoint's state, read safely, once it is known to hold a Sentence VAE."""
    state = checkpoint_utils.load_checkpoint_to_cpu(path, arg_overrides)
    cfg = saved_config(state)
    require_sentence_vae(cfg.model, getattr(cfg.task, "_name", None), path)
    return state
