"""The checkpoint format, in one place: every path and file name of a model dir (how an RLlib
algorithm checkpoint is found in it, where its RLModules, connector pipelines and pickled config
are, where the ONNX export goes), the fingerprint that ties an export to its checkpoint, and the
``metadata.json`` this image writes beside the checkpoint on export.

Layout of the model dir after export (SageMaker tars it to model.tar.gz)::

    rllib_checkpoint.json                             CHECKPOINT_MARKER (RLlib's)
    class_and_ctor_args.pkl                           CLASS_AND_CTOR_ARGS_FILE: the pickled AlgorithmConfig
    learner_group/learner/rl_module/<module_id>/      RL_MODULE_SUBDIR, `rl_module_dir`
    env_runner/env_to_module_connector/               ENV_TO_MODULE_SUBDIR (under ENV_RUNNER_SUBDIR)
    env_runner/module_to_env_connector/               MODULE_TO_ENV_SUBDIR
    algorithm_state.pkl, ...                          the rest of RLlib's checkpoint
    metadata.json                                     METADATA_FILE (ours, `export_model`)
    onnx/                                             ONNX_SUBDIR (ours, `onnx_dir`)
        export.json                                   ONNX_EXPORT_REPORT
        <module_id>.onnx, <module_id>.json            `onnx_graph_path`, `onnx_sidecar_path`

The checkpoint is copied as RLlib wrote it, so ``Algorithm.from_checkpoint(model_dir)`` and
``RLModule.from_checkpoint(model_dir/learner_group/learner/rl_module/<module_id>)`` work on it
directly; `sagemaker_ray_rl.inference.policy.Policy.load` serves it and
`sagemaker_ray_rl.inference.onnx_export` writes the ``onnx/`` files.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import pickle
import platform
import re
import shutil
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ray.rllib.core.rl_module.rl_module import RLModule
from ray.rllib.utils.serialization import gym_space_to_dict

from sagemaker_ray_rl import __version__
from sagemaker_ray_rl.contract.errors import ModelLoadError

#: The file RLlib writes at the top of every checkpoint (``Checkpointable.save_to_path``).
CHECKPOINT_MARKER = "rllib_checkpoint.json"
#: The file RLlib writes at the top of an algorithm checkpoint with the algorithm's class and
#: constructor arguments, its ``AlgorithmConfig`` among them (`pickled_algorithm_config`).
CLASS_AND_CTOR_ARGS_FILE = "class_and_ctor_args.pkl"
#: Where an algorithm checkpoint keeps its RLModules (one sub-directory per module id).
RL_MODULE_SUBDIR = Path("learner_group") / "learner" / "rl_module"
#: Where an algorithm checkpoint keeps its env runner's state (RLlib's ``COMPONENT_ENV_RUNNER``).
ENV_RUNNER_SUBDIR = Path("env_runner")
#: The env-to-module connector pipeline (RLlib's ``COMPONENT_ENV_TO_MODULE_CONNECTOR``).
ENV_TO_MODULE_SUBDIR = ENV_RUNNER_SUBDIR / "env_to_module_connector"
#: The module-to-env connector pipeline (RLlib's ``COMPONENT_MODULE_TO_ENV_CONNECTOR``).
MODULE_TO_ENV_SUBDIR = ENV_RUNNER_SUBDIR / "module_to_env_connector"
#: This image's description of the checkpoint, beside it (`build_metadata`, `export_model`).
METADATA_FILE = "metadata.json"
#: Where the ONNX export goes by default, relative to the model dir (`onnx_dir`).
ONNX_SUBDIR = "onnx"
#: The summary of one ONNX export run in its export dir: which modules were exported, why not the others.
ONNX_EXPORT_REPORT = "export.json"
#: The packages whose versions `versions` always gives (import names), besides Python and this package.
VERSIONED_PACKAGES = ("ray", "torch", "gymnasium", "numpy")


def rl_module_dir(checkpoint_dir: Path, module_id: str) -> Path:
    """The RLModule checkpoint of `module_id` in an algorithm checkpoint:
    ``checkpoint_dir/learner_group/learner/rl_module/<module_id>`` (not checked to exist)."""
    return Path(checkpoint_dir) / RL_MODULE_SUBDIR / module_id


def onnx_dir(model_dir: Path) -> Path:
    """Where the ONNX export of the checkpoint in `model_dir` goes by default: ``model_dir/onnx``."""
    return Path(model_dir) / ONNX_SUBDIR


def onnx_graph_path(export_dir: Path, module_id: str) -> Path:
    """The ONNX graph of `module_id` in an export dir: ``export_dir/<module_id>.onnx``."""
    return Path(export_dir) / f"{module_id}.onnx"


def onnx_sidecar_path(graph: Path) -> Path:
    """The JSON sidecar of an ONNX graph file (inputs, outputs, spaces, the checkpoint's
    fingerprint): ``<module_id>.json`` beside ``<module_id>.onnx``."""
    return Path(graph).with_suffix(".json")


def checkpoint_fingerprint(checkpoint_dir: Path, module_id: str) -> str:
    """The hex sha256 over the files a module's answers depend on: its RLModule directory and
    the checkpoint's connector pipelines (``env_runner/``), paths and bytes, in sorted order.
    The ONNX sidecar records it so that a graph is never used for a checkpoint it was not
    exported from."""
    digest = hashlib.sha256()
    checkpoint_dir = Path(checkpoint_dir)
    for root in (rl_module_dir(checkpoint_dir, module_id), checkpoint_dir / ENV_RUNNER_SUBDIR):
        for path in sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else ():
            digest.update(str(path.relative_to(checkpoint_dir)).encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()


def pickled_algorithm_config(checkpoint_dir: Path) -> Any:
    """The algorithm config pickled in the checkpoint's ``class_and_ctor_args.pkl``: an
    ``AlgorithmConfig``, or a config dict (older checkpoints).

    Unpickling imports the config's classes (RLlib's, and any custom env or callback class it
    references).

    Raises:
        Exception: what opening or unpickling the file raises (no file, a class that is not
            importable here, a file of another layout).
    """
    with open(Path(checkpoint_dir) / CLASS_AND_CTOR_ARGS_FILE, "rb") as f:
        ctor = pickle.load(f)["ctor_args_and_kwargs"]
    return ctor[0][0] if ctor[0] else ctor[1]["config"]


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


def versions(*extra: str) -> dict[str, str]:
    """The versions of Python, of Ray, torch, Gymnasium and NumPy (`VERSIONED_PACKAGES`), of the
    `extra` packages (import names, e.g. ``"onnx"``) and of this package, for reproducibility:
    name -> version (each package's ``__version__``; ``python`` and ``sagemaker_ray_rl`` keys).

    Each package is imported by name (`importlib.import_module`): the callers have loaded them
    already, and a caller that has not pays for it here, not every importer of this module.

    Raises:
        ImportError: a package is not installed.
    """
    out = {"python": platform.python_version()}
    for name in dict.fromkeys((*VERSIONED_PACKAGES, *extra)):
        out[name] = importlib.import_module(name).__version__
    out["sagemaker_ray_rl"] = __version__
    return out


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
    modules: dict[str, Any] = {}
    for module_id in module_ids(checkpoint_dir):
        path = rl_module_dir(checkpoint_dir, module_id).resolve()
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
