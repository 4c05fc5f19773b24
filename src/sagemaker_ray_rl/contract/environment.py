"""One read-only snapshot of the SageMaker container contract.

Everything the package needs to know about the job or the endpoint it runs in is read here, once,
by `Environment.from_environ()`: paths under the base dir (``/opt/ml``, moved by
``SAGEMAKER_BASE_DIR``), hyperparameters, the resource config, channels, CPU and GPU counts and the
serving settings. Nothing else in the package reads the contract's variables or config files.

Why not `sagemaker_training.environment.Environment`: the toolkit computes its paths at import time
from ``SAGEMAKER_BASE_DIR``, so it cannot read an arbitrary tree (tests build real ``/opt/ml`` trees
in temp dirs), it needs every training config file to exist, and it knows nothing of serving. The
decoding rules are the toolkit's (see `decode_hyperparameters`); the toolkit itself still runs user
entry points (`training.py`).

Contract sources: SageMaker developer guide, "How Amazon SageMaker Provides Training Information"
and "Use Your Own Inference Code with Hosting Services"; aws/sagemaker-training-toolkit
`environment.py`.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from sagemaker_ray_rl.contract import names as p
from sagemaker_ray_rl.contract.errors import ContractError, HyperparameterError


def decode_hyperparameters(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Decode hyperparameter values the way the SageMaker training toolkit does.

    SageMaker stores every value as a string. Each value is parsed as JSON (``"0.0003"`` -> 0.0003,
    ``"[1, 2]"`` -> [1, 2], ``'{"a": 1}'`` -> {"a": 1}); a value that is not valid JSON (``CartPole-v1``)
    or is not a string stays as it is. Source: `sagemaker_training.environment.read_hyperparameters`.

    Args:
        raw: the contents of ``hyperparameters.json``, name -> value.

    Returns:
        A new dict, name -> decoded value.
    """
    decoded: dict[str, Any] = {}
    for name, value in raw.items():
        try:
            decoded[name] = json.loads(value)
        except (TypeError, ValueError):
            decoded[name] = value
    return decoded


def dotted_name(name: str) -> str:
    """The dotted spelling of hyperparameter `name`: each ``__`` becomes ``.``
    (``rl__training__config__lr`` -> ``rl.training.config.lr``). Names of SageMaker and the SDK
    (``_*``, ``sagemaker_*``) are left as they are. No checks: see `dotted_names`.
    """
    if p.DOTLESS_SEPARATOR not in name or name.startswith(
        (p.RESERVED_HYPERPARAMETER_PREFIX, p.SAGEMAKER_HYPERPARAMETER_PREFIX)
    ):
        return name
    return name.replace(p.DOTLESS_SEPARATOR, ".")


def dotted_names(hyperparameters: Mapping[str, Any]) -> dict[str, Any]:
    """Turn the dotless spelling of hyperparameter names into the dotted one (`dotted_name`).

    Some drivers accept only names that are shell variable names (letters, digits, ``_``): the SDK v3
    ``ModelTrainer`` with ``source_code`` runs its own ``sm_train.sh``, whose ``environment.py``
    writes ``export SM_HP_<NAME>=...`` for every hyperparameter (``-`` becomes ``_``, nothing else
    changes) and fails on ``rl.training.config.lr``. ``rl__training__config__lr`` passes, and means
    the same setting here. Names without ``__`` stay as they are.

    Args:
        hyperparameters: name -> value (decoded or not; values are not looked at).

    Returns:
        A new dict with the same values (and order), every name in its dotted spelling.

    Raises:
        HyperparameterError: a dotless name whose parts cannot be told apart (three underscores in a
            row, or ``__`` at its end: ``rl__training__config___lr``), or the same setting given in both
            spellings (``rl.training.config.lr`` and ``rl__training__config__lr``), naming both keys.
    """
    dotted: dict[str, Any] = {}
    given_as: dict[str, str] = {}
    for name, value in hyperparameters.items():
        key = dotted_name(name)
        if key != name and any(not part or part[0] == "_" or part[-1] == "_" for part in name.split("__")):
            raise HyperparameterError(
                f"Ambiguous hyperparameter name {name!r}: in the dotless spelling each '__' stands for a "
                "'.', and the parts between them must neither be empty nor start or end with '_' "
                "(e.g. 'rl__training__config__lr' for 'rl.training.config.lr')."
            )
        if key in dotted:
            raise HyperparameterError(
                f"Hyperparameters {given_as[key]!r} and {name!r} both set {key!r} ('__' spells '.'); "
                "give only one of them."
            )
        dotted[key] = value
        given_as[key] = name
    return dotted


def is_image_hyperparameter(name: str) -> bool:
    """Whether hyperparameter `name` belongs to the image, SageMaker or the SDK rather than to RLlib
    or a user script: ``sagemaker_*`` (SDK and toolkit), ``_*`` (reserved by SageMaker, e.g. the
    tuner's ``_tuning_objective_metric``), ``ray.*`` (the cluster), ``mode`` and ``offline.*``
    (collect and offline jobs), in either spelling (`dotted_name`: ``ray__gcs_port``). Source of the
    families: `names.IMAGE_HYPERPARAMETER_PREFIXES`.
    """
    name = dotted_name(name)
    return name in p.IMAGE_HYPERPARAMETERS or name.startswith(p.IMAGE_HYPERPARAMETER_PREFIXES)


@dataclass(frozen=True)
class InstanceGroup:
    """One SageMaker instance group of a heterogeneous cluster (resourceconfig ``instance_groups``).

    Attributes:
        name: the group name given in the SDK's ``InstanceGroup``.
        instance_type: e.g. ``ml.g5.xlarge``.
        hosts: host names of the group, sorted.
    """

    name: str
    instance_type: str
    hosts: tuple[str, ...]


@dataclass(frozen=True)
class ResourceConfig:
    """The hosts of a training job (``input/config/resourceconfig.json``).

    Attributes:
        current_host: this container's host name on the job network (e.g. ``algo-1``).
        hosts: all host names, sorted lexicographically (SageMaker sorts them; we sort again).
        network_interface_name: the interface the hosts talk over (``eth0``; ``ethwe`` in SDK v3
            local mode).
        current_instance_type: e.g. ``ml.c5.xlarge``; ``local`` outside SageMaker.
        current_group_name: this host's instance group (``homogeneousCluster`` when there is one).
        instance_groups: all instance groups; empty in files that predate heterogeneous clusters.
    """

    current_host: str
    hosts: tuple[str, ...]
    network_interface_name: str = "eth0"
    current_instance_type: str = "local"
    current_group_name: str = "homogeneousCluster"
    instance_groups: tuple[InstanceGroup, ...] = ()

    @property
    def master_host(self) -> str:
        """The first host of the sorted host list: it runs the Ray head and the driver."""
        return self.hosts[0]

    @property
    def is_master(self) -> bool:
        """Whether this container is the master host."""
        return self.current_host == self.master_host

    @classmethod
    def single_host(cls, host: str) -> ResourceConfig:
        """The config of a one-host job on `host`, as used when no resourceconfig.json exists."""
        return cls(current_host=host, hosts=(host,))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResourceConfig:
        """Build from the parsed JSON of resourceconfig.json.

        Raises:
            ContractError: ``current_host`` or ``hosts`` missing, or ``current_host`` not in ``hosts``.
        """
        try:
            current_host = str(data["current_host"])
            hosts = tuple(sorted(str(h) for h in data["hosts"]))
        except (KeyError, TypeError) as exc:
            raise ContractError(
                f"resourceconfig.json must hold 'current_host' (a string) and 'hosts' (a list of "
                f"strings); got keys {sorted(data)}"
            ) from exc
        if current_host not in hosts:
            raise ContractError(f"resourceconfig.json: current_host {current_host!r} is not among hosts {list(hosts)}")
        groups = tuple(
            InstanceGroup(
                name=str(g.get("instance_group_name", "")),
                instance_type=str(g.get("instance_type", "")),
                hosts=tuple(sorted(str(h) for h in g.get("hosts", ()))),
            )
            for g in data.get("instance_groups", ())
        )
        return cls(
            current_host=current_host,
            hosts=hosts,
            network_interface_name=str(data.get("network_interface_name", "eth0")),
            current_instance_type=str(data.get("current_instance_type", "local")),
            current_group_name=str(data.get("current_group_name", "homogeneousCluster")),
            instance_groups=groups,
        )


@dataclass(frozen=True)
class ServingSettings:
    """How the model server listens and sizes itself (hosting and batch transform).

    Attributes:
        port: TCP port (``SAGEMAKER_BIND_TO_PORT``, default 8080).
        workers: gunicorn worker processes (``SAGEMAKER_MODEL_SERVER_WORKERS``, default: CPU count).
        timeout_s: seconds one request may wait (for its body, for the worker) before it is
            answered 408/504, and a worker may compute without a pause before gunicorn restarts it
            (``SAGEMAKER_MODEL_SERVER_TIMEOUT``, default 60, SageMaker's own invocation limit).
        max_payload_mb: largest request body in MB (``SAGEMAKER_MAX_PAYLOAD_IN_MB``, default 6);
            a larger body, with ``Content-Length`` or chunked, is answered 413.
        max_requests: requests after which a gunicorn worker finishes what it has in flight and is
            replaced by a fresh fork of the master (``SAGEMAKER_RAY_RL_MAX_REQUESTS``, default
            100,000, each worker at a random point up to 10% later so they do not all restart
            together; 0 never): bounds what a slow leak in a worker can grow to.
        max_records: most records (observations, JSON Lines lines, CSV rows, array rows) one
            request may carry (``SAGEMAKER_RAY_RL_MAX_RECORDS``, default 1,000,000: never reached
            by a body within the default 6 MB whose records take 7 bytes or more, i.e. any
            observation of two numbers or more); more is answered 413, 0 sets no limit. It bounds
            the time one request holds a worker.
        default_accept: response type when Accept is absent or ``*/*``
            (``SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT``); None (unset) answers in the request's own
            content type (JSON Lines in, JSON Lines out, as batch transform expects).
        server: ``gunicorn`` (default) or ``ray-serve`` (``SAGEMAKER_RAY_RL_SERVER``).
        max_batch_size: most requests a gunicorn worker answers with one forward pass per module
            (those ready at the same moment; ``SAGEMAKER_RAY_RL_MAX_BATCH_SIZE``, 32; 1 turns
            batching off).
        ray_serve_replicas: replicas of the Ray Serve deployment (``SAGEMAKER_RAY_SERVE_REPLICAS``, 1).
        ray_serve_max_batch_size: most requests a replica answers with one forward pass per module
            (``@serve.batch``; ``SAGEMAKER_RAY_SERVE_MAX_BATCH_SIZE``, 32; 1 turns batching off).
        ray_serve_batch_wait_timeout_s: seconds a batch waits for more requests after its first
            (``SAGEMAKER_RAY_SERVE_BATCH_WAIT_TIMEOUT_S``, 0: take what is queued, add no latency).
        multi_model: a multi-model endpoint (``SAGEMAKER_MULTI_MODEL=true``; `serving.multi_model`).
        mme_memory_mb: its memory budget in MB (``SAGEMAKER_RAY_RL_MME_MEMORY_MB``); None: the
            default of `serving.multi_model`.
        inference: what answers greedy requests (``SAGEMAKER_RAY_RL_INFERENCE``): ``auto`` (the
            default: ONNX Runtime for each module with an exported graph matching the checkpoint,
            torch for the others), ``onnx`` (graphs required for every module) or ``torch``.
    """

    port: int = 8080
    workers: int = 1
    timeout_s: int = 60
    max_payload_mb: float = 6.0
    max_records: int = 1_000_000
    max_requests: int = 100_000
    default_accept: str | None = None
    server: str = "gunicorn"
    max_batch_size: int = 32
    ray_serve_replicas: int = 1
    ray_serve_max_batch_size: int = 32
    ray_serve_batch_wait_timeout_s: float = 0.0
    multi_model: bool = False
    mme_memory_mb: float | None = None
    inference: str = "auto"

    @property
    def max_payload_bytes(self) -> int:
        """`max_payload_mb` in bytes (1 MB = 1024 * 1024 bytes)."""
        return int(self.max_payload_mb * 1024 * 1024)


@dataclass(frozen=True)
class Environment:
    """The contract of the container this process runs in, read once and never changed.

    Build it with `from_environ`; tests pass their own mapping and a temp base dir.

    Attributes:
        base_dir: the contract root, ``/opt/ml`` unless ``SAGEMAKER_BASE_DIR`` moves it.
        model_dir: where model artifacts go (``SM_MODEL_DIR`` or ``<base>/model``); SageMaker tars it
            to model.tar.gz after training and extracts it here before serving.
        output_data_dir: extra outputs, tarred to output.tar.gz (``SM_OUTPUT_DATA_DIR`` or
            ``<base>/output/data``).
        checkpoint_dir: ``<base>/checkpoints``, synced to ``checkpoint_s3_uri`` when configured.
        hyperparameters: decoded hyperparameters (read-only mapping), names in the dotted spelling
            (`dotted_names`); empty when there is no file.
        resource_config: the job's hosts; a single-host config for this machine when the file is
            missing (serving, or a plain ``docker run``).
        channels: input channel name -> directory (``inputdataconfig.json`` and ``SM_CHANNEL_*``).
        num_cpus: CPUs usable by this process (``SM_NUM_CPUS`` or the scheduler affinity).
        num_gpus: GPUs visible (``SM_NUM_GPUS`` or ``nvidia-smi --list-gpus``, 0 without it).
        user_entry_point: the user's script (hyperparameter ``sagemaker_program`` or
            ``SAGEMAKER_PROGRAM``), None for the built-in experiment.
        serving: the model server settings.
    """

    base_dir: Path
    model_dir: Path
    output_data_dir: Path
    checkpoint_dir: Path
    hyperparameters: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    resource_config: ResourceConfig = field(default_factory=lambda: ResourceConfig.single_host("localhost"))
    channels: Mapping[str, Path] = field(default_factory=lambda: MappingProxyType({}))
    num_cpus: int = 1
    num_gpus: int = 0
    user_entry_point: str | None = None
    serving: ServingSettings = field(default_factory=ServingSettings)

    @property
    def input_config_dir(self) -> Path:
        """``<base>/input/config``: hyperparameters.json, resourceconfig.json, inputdataconfig.json."""
        return self.base_dir / "input" / "config"

    @property
    def output_dir(self) -> Path:
        """``<base>/output``: holds ``failure`` and ``data/``."""
        return self.base_dir / "output"

    @property
    def failure_file(self) -> Path:
        """``<base>/output/failure``: its first 1024 characters become the job's FailureReason."""
        return self.output_dir / "failure"

    @property
    def tensorboard_dir(self) -> Path:
        """``<base>/output/tensorboard``: the default local path of the estimator's
        ``TensorBoardOutputConfig``; SageMaker uploads it to that config's S3 path."""
        return self.output_dir / "tensorboard"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Environment:
        """Read the contract from environment variables and the files under the base dir.

        Args:
            environ: the variables to read; ``os.environ`` when None.

        Raises:
            ContractError: a config file exists but is not valid JSON of the documented shape, or a
                numeric variable is not a number.
            HyperparameterError: an ambiguous dotless hyperparameter name, or one setting in both
                spellings (`dotted_names`).
        """
        env = os.environ if environ is None else environ
        base_dir = Path(env.get(p.BASE_DIR_ENV, p.DEFAULT_BASE_DIR))
        config_dir = base_dir / "input" / "config"

        hyperparameters = dotted_names(decode_hyperparameters(_read_json(config_dir / p.HYPERPARAMETERS_FILE) or {}))
        resource_json = _read_json(config_dir / p.RESOURCE_CONFIG_FILE)
        if resource_json is None:
            resource_config = ResourceConfig.single_host(env.get(p.CURRENT_HOST_ENV) or socket.gethostname())
        else:
            resource_config = ResourceConfig.from_dict(resource_json)

        channels = {
            name: base_dir / "input" / "data" / name
            for name in (_read_json(config_dir / p.INPUT_DATA_CONFIG_FILE) or {})
        }
        for name, value in env.items():
            if name.startswith(p.CHANNEL_ENV_PREFIX):
                channels[name[len(p.CHANNEL_ENV_PREFIX) :].lower()] = Path(value)

        num_cpus = _number_var(env, p.NUM_CPUS_ENV, _available_cpus())
        num_gpus = _number_var(env, p.NUM_GPUS_ENV, None)
        program = hyperparameters.get(p.USER_PROGRAM_HYPERPARAMETER) or env.get(p.USER_PROGRAM_ENV)
        return cls(
            base_dir=base_dir,
            model_dir=Path(env.get(p.MODEL_DIR_ENV, base_dir / "model")),
            output_data_dir=Path(env.get(p.OUTPUT_DATA_DIR_ENV, base_dir / "output" / "data")),
            checkpoint_dir=base_dir / "checkpoints",
            hyperparameters=MappingProxyType(hyperparameters),
            resource_config=resource_config,
            channels=MappingProxyType(channels),
            num_cpus=num_cpus,
            num_gpus=_visible_gpus() if num_gpus is None else num_gpus,
            user_entry_point=str(program) if program else None,
            serving=ServingSettings(
                port=_number_var(env, p.BIND_TO_PORT_ENV, 8080),
                workers=max(1, _number_var(env, p.MODEL_SERVER_WORKERS_ENV, num_cpus)),
                timeout_s=_number_var(env, p.MODEL_SERVER_TIMEOUT_ENV, 60),
                max_payload_mb=_number_var(env, p.MAX_PAYLOAD_IN_MB_ENV, 6.0, float),
                max_records=max(0, _number_var(env, p.MAX_RECORDS_ENV, 1_000_000)),
                max_requests=max(0, _number_var(env, p.MAX_REQUESTS_ENV, 100_000)),
                default_accept=env.get(p.DEFAULT_INVOCATIONS_ACCEPT_ENV) or None,
                server=_server(env.get(p.SERVER_ENV)),
                max_batch_size=max(1, _number_var(env, p.MAX_BATCH_SIZE_ENV, 32)),
                ray_serve_replicas=max(1, _number_var(env, p.RAY_SERVE_REPLICAS_ENV, 1)),
                ray_serve_max_batch_size=max(1, _number_var(env, p.RAY_SERVE_MAX_BATCH_SIZE_ENV, 32)),
                ray_serve_batch_wait_timeout_s=max(
                    0.0, _number_var(env, p.RAY_SERVE_BATCH_WAIT_TIMEOUT_ENV, 0.0, float)
                ),
                multi_model=_bool_var(env, p.MULTI_MODEL_ENV),
                mme_memory_mb=_number_var(env, p.MME_MEMORY_ENV, None, float),
                inference=_choice(env.get(p.INFERENCE_ENV), p.INFERENCE_ENV, INFERENCE_ENGINES),
            ),
        )


SERVERS = ("gunicorn", "ray-serve")


def _server(value: str | None) -> str:
    server = (value or "gunicorn").strip().lower()
    if server not in SERVERS:
        raise ContractError(f"SAGEMAKER_RAY_RL_SERVER must be one of {list(SERVERS)}, got {value!r}")
    return server


#: ``SAGEMAKER_RAY_RL_INFERENCE`` values (the first is the default); see `ServingSettings.inference`.
INFERENCE_ENGINES = ("auto", "onnx", "torch")


def _choice(value: str | None, name: str, choices: tuple[str, ...]) -> str:
    choice = (value or choices[0]).strip().lower()
    if choice not in choices:
        raise ContractError(f"{name} must be one of {list(choices)}, got {value!r}")
    return choice


def _read_json(path: Path) -> Any:
    """The parsed JSON of `path`, or None when the file does not exist."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ContractError(f"{path} is not valid JSON: {exc}") from exc


def _number_var(env: Mapping[str, str], name: str, default: Any, kind: type = int) -> Any:
    """Variable `name` parsed with `kind` (int or float); `default` when unset or empty."""
    value = env.get(name)
    if value is None or value == "":
        return default
    try:
        return kind(value)
    except ValueError as exc:
        noun = "an integer" if kind is int else "a number"
        raise ContractError(f"environment variable {name} must be {noun}, got {value!r}") from exc


def _bool_var(env: Mapping[str, str], name: str) -> bool:
    """Variable `name` as ``true``/``false`` (any case, or 1/0); false when unset or empty."""
    value = (env.get(name) or "").strip().lower()
    if value in ("", "false", "0"):
        return False
    if value in ("true", "1"):
        return True
    raise ContractError(f"environment variable {name} must be true or false, got {env[name]!r}")


def _available_cpus() -> int:
    """CPUs this process may run on (respects cpusets, unlike `os.cpu_count`)."""
    return len(os.sched_getaffinity(0))


def _visible_gpus() -> int:
    """GPUs listed by ``nvidia-smi --list-gpus``, as the training toolkit counts them; 0 without it."""
    nvidia_smi = shutil.which("nvidia-smi")
    if nvidia_smi is None:
        return 0
    try:
        out = subprocess.run([nvidia_smi, "--list-gpus"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))
