"""The checkpoint format, in one place: how an RLlib algorithm checkpoint is found in a model dir,
where its RLModules are, and the ``metadata.json`` this image writes beside it on export.

Layout of the model dir after export (SageMaker tars it to model.tar.gz)::

    rllib_checkpoint.json, algorithm_state.pkl, learner_group/, env_runner/, ...   (the checkpoint)
    metadata.json                                                                   (ours)

The checkpoint is copied as RLlib wrote it, so ``Algorithm.from_checkpoint(model_dir)`` and
``RLModule.from_checkpoint(model_dir/learner_group/learner/rl_module/<module_id>)`` work on it
directly; `sagemaker_ray_rl.inference.policy.Policy.load` serves it.
"""

from __future__ import annotations

import json
import platform
import re
import shutil
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sagemaker_ray_rl.contract.errors import ModelLoadError

#: The file RLlib writes at the top of every checkpoint (``Checkpointable.save_to_path``).
CHECKPOINT_MARKER = "rllib_checkpoint.json"
METADATA_FILE = "metadata.json"
#: Where an algorithm checkpoint keeps its RLModules (one sub-directory per module id).
RL_MODULE_SUBDIR = Path("learner_group") / "learner" / "rl_module"


def module_ids(checkpoint_dir: Path) -> list[str]:
    """The module ids of an algorithm checkpoint (``["default_policy"]`` for single-agent).

    Raises:
        ModelLoadError: the directory holds no RLModule checkpoint.
    """
    root = Path(checkpoint_dir) / RL_MODULE_SUBDIR
    if not root.is_dir():
        raise ModelLoadError(f"{checkpoint_dir} is not an RLlib algorithm checkpoint: {RL_MODULE_SUBDIR}/ is missing")
    ids = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not ids:
        raise ModelLoadError(f"{root} holds no RLModule directories")
    return ids


def find_checkpoint(model_dir: Path) -> Path:
    """The algorithm checkpoint directory inside `model_dir`: `model_dir` itself when it holds
    ``rllib_checkpoint.json`` and an RLModule, else the shallowest such directory below it.

    Raises:
        ModelLoadError: there is none.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelLoadError(f"model directory {model_dir} does not exist")
    candidates = sorted(
        (marker.parent for marker in model_dir.rglob(CHECKPOINT_MARKER) if (marker.parent / RL_MODULE_SUBDIR).is_dir()),
        key=lambda path: (len(path.relative_to(model_dir).parts), str(path)),
    )
    if not candidates:
        raise ModelLoadError(
            f"no RLlib algorithm checkpoint in {model_dir}: expected a directory with {CHECKPOINT_MARKER} "
            f"and {RL_MODULE_SUBDIR}/ (what Algorithm.save() and this image's training write)"
        )
    return candidates[0]


#: What `redact_secrets` writes instead of a secret's value.
REDACTED = "<redacted>"
#: Parts of a key name that mark its value as a secret wherever they appear in the name
#: (``db_password``, ``dbPassword``, ``rl.training.config.hf_token``, ``github_apikey``).
_SECRET_PARTS = re.compile(r"token|secret|passw(or)?d|passphrase|credential|apikey|accesskey|privatekey", re.IGNORECASE)
#: Whole words of a key name (split at ``.``, ``_``, ``-``, spaces and camelCase) that mark a secret.
_SECRET_WORDS = frozenset({"key", "keys", "pwd", "auth", "authorization", "cookie", "signature"})


def is_secret_key(name: str) -> bool:
    """Whether a hyperparameter or config key names a secret: it contains ``token``, ``secret``,
    ``password``/``passwd``, ``passphrase``, ``credential``, ``apikey``, ``accesskey`` or
    ``privatekey`` (any case), or one of its words is ``key``, ``pwd``, ``auth``,
    ``authorization``, ``cookie`` or ``signature`` (``api_key``, ``aws-access-key``, ``AuthKey``).

    Errs on the side of hiding: ``tokenizer`` counts as a secret, ``monkey`` does not.
    """
    if _SECRET_PARTS.search(name):
        return True
    words = re.split(r"[^0-9a-zA-Z]+|(?<=[a-z0-9])(?=[A-Z])", name)
    return any(word.lower() in _SECRET_WORDS for word in words if word)


def redact_secrets(value: Any) -> Any:
    """A copy of `value` (a hyperparameter mapping, an env config, any JSON-like value) with the
    value of every secret-looking key (`is_secret_key`), at any depth of nested mappings and
    lists, replaced by ``"<redacted>"``. Other values are kept as they are."""
    if isinstance(value, Mapping):
        return {k: REDACTED if is_secret_key(str(k)) else redact_secrets(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_secrets(v) for v in value]
    return value


def versions() -> dict[str, str]:
    """Versions of Python, Ray, torch, Gymnasium, NumPy and this package, for reproducibility."""
    import gymnasium
    import numpy
    import ray
    import torch

    from sagemaker_ray_rl import __version__

    return {
        "python": platform.python_version(),
        "ray": ray.__version__,
        "torch": torch.__version__,
        "gymnasium": gymnasium.__version__,
        "numpy": numpy.__version__,
        "sagemaker_ray_rl": __version__,
    }


def build_metadata(
    checkpoint_dir: Path,
    *,
    algorithm: str,
    env: str,
    env_config: Mapping[str, Any],
    metrics: Mapping[str, Any],
    hyperparameters: Mapping[str, Any] | None = None,
    normalize_actions: bool = True,
    clip_actions: bool = False,
) -> dict[str, Any]:
    """The contents of ``metadata.json`` for a checkpoint.

    Spaces are read from the checkpoint's own RLModules (loaded without Ray), which also proves
    the checkpoint loads. Each space appears as text (``Box(-1.0, 1.0, (3,), float32)``) and as
    RLlib's serialisation (`ray.rllib.utils.serialization.gym_space_to_dict`), which
    `gym_space_from_dict` reads back.

    Args:
        checkpoint_dir: an algorithm checkpoint directory.
        algorithm: RLlib algorithm name.
        env: env id the policy was trained on.
        env_config: the env's config (secret-looking keys' values redacted, `redact_secrets`).
        metrics: final metrics, name -> number (non-finite values are dropped: JSON has no NaN).
        hyperparameters: the job's hyperparameters, recorded as given except the values of
            secret-looking keys (``db_password``, ``api_key``, ``hf_token``, ...: `is_secret_key`),
            which read ``"<redacted>"``: ``model.tar.gz`` is copied, shared and deployed far more
            widely than the training job's own configuration.
        normalize_actions: the config's ``normalize_actions`` (the server unsquashes Box actions).
        clip_actions: the config's ``clip_actions``.

    Raises:
        ModelLoadError: the checkpoint holds no loadable RLModule.
    """
    from ray.rllib.core.rl_module.rl_module import RLModule
    from ray.rllib.utils.serialization import gym_space_to_dict

    modules: dict[str, Any] = {}
    for module_id in module_ids(checkpoint_dir):
        path = (Path(checkpoint_dir) / RL_MODULE_SUBDIR / module_id).resolve()
        try:
            module = RLModule.from_checkpoint(str(path))
        except Exception as exc:
            raise ModelLoadError(f"cannot load RLModule {module_id!r} from {path}: {exc}") from exc
        modules[module_id] = {
            "class": f"{type(module).__module__}.{type(module).__qualname__}",
            "observation_space": str(module.observation_space),
            "action_space": str(module.action_space),
            "observation_space_spec": gym_space_to_dict(module.observation_space),
            "action_space_spec": gym_space_to_dict(module.action_space),
        }
    return {
        "format_version": 1,
        "algorithm": algorithm,
        "env": env,
        "env_config": redact_secrets(env_config),
        "module_ids": list(modules),
        "modules": modules,
        "action_postprocessing": {"normalize_actions": normalize_actions, "clip_actions": clip_actions},
        "metrics": {k: v for k, v in metrics.items() if _is_json_number(v)},
        "hyperparameters": redact_secrets(hyperparameters or {}),
        "versions": versions(),
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def export_model(checkpoint_dir: Path, model_dir: Path, metadata: Mapping[str, Any]) -> Path:
    """Copy `checkpoint_dir` into `model_dir` and write ``metadata.json`` there.

    Files already in `model_dir` that the checkpoint does not have are kept (a user script may
    have written its own). The ``hyperparameters`` and ``env_config`` of `metadata` are written
    with secret-looking keys' values redacted (`redact_secrets`), also when `metadata` was not
    made by `build_metadata`.

    Returns:
        The path of the written ``metadata.json``.
    """
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(checkpoint_dir, model_dir, dirs_exist_ok=True)
    path = model_dir / METADATA_FILE
    safe = {k: redact_secrets(v) if k in ("hyperparameters", "env_config") else v for k, v in metadata.items()}
    path.write_text(json.dumps(safe, indent=2, sort_keys=False, default=str) + "\n")
    return path


def _is_json_number(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and value == value
        and value not in (float("inf"), float("-inf"))
    )
