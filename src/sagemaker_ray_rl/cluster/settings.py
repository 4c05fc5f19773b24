"""The ``ray.*`` hyperparameters: how the Ray cluster over the job's hosts is formed and placed.

Every host reads the same ``hyperparameters.json``, so every host derives the same settings, and a
bad value fails on every host before any Ray process starts.

==============================  ===============================================================
``ray.join_timeout_s``          Seconds the master waits for the hosts to join, and a worker keeps
                                trying to reach the master. Default 300.
``ray.min_hosts``               Hosts that must have joined before training starts (the master
                                included). Default: all of them. A host lost after that always
                                fails the job (RLlib's placement group would wait for it forever).
``ray.head_lost_timeout_s``     Seconds a worker waits for an unreachable head before it gives up.
                                Default 15.
``ray.gcs_port``                The head's GCS port. Default 6379.
``ray.include_dashboard``       Start Ray's dashboard on the master, bound to 127.0.0.1. Default:
                                true on several hosts (its state API says which host ran which
                                actor), false on one (it lengthens start-up; docs/benchmarks.md).
``ray.object_store_memory_mb``  Object store size per host. Default: 30% of memory, in /dev/shm when
                                it fits there, else in /tmp (SageMaker local mode's 64 MB shm).
``ray.learner_group``           Instance group whose hosts run the learner(s) (and the algorithm's
                                main process, which holds the learner when ``num_learners`` is 0).
``ray.env_runner_groups``       Instance group(s) whose hosts run the env runners: a name, a
                                comma-separated list or a JSON list.
``ray.auth``                    ``token`` (default) or ``disabled``: Ray's token authentication
                                between the job's processes (`auth` says where the token comes from).
``ray.auth_token_secret``       AWS Secrets Manager secret (name or ARN) holding the token.
==============================  ===============================================================

Source of the defaults: ``ray start`` (Ray 2.60) for the port and the object store share; the
SageMaker training toolkit waits up to 15 minutes for hosts, which is longer than a failed job should
take to say so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sagemaker_ray_rl.cluster.auth import AUTH_MODES
from sagemaker_ray_rl.contract import validation
from sagemaker_ray_rl.contract.environment import ResourceConfig
from sagemaker_ray_rl.contract.names import CLUSTER_HYPERPARAMETER_PREFIX as PREFIX

JOIN_TIMEOUT_S = "ray.join_timeout_s"
MIN_HOSTS = "ray.min_hosts"
HEAD_LOST_TIMEOUT_S = "ray.head_lost_timeout_s"
GCS_PORT = "ray.gcs_port"
INCLUDE_DASHBOARD = "ray.include_dashboard"
OBJECT_STORE_MEMORY_MB = "ray.object_store_memory_mb"
LEARNER_GROUP = "ray.learner_group"
ENV_RUNNER_GROUPS = "ray.env_runner_groups"
AUTH = "ray.auth"
AUTH_TOKEN_SECRET = "ray.auth_token_secret"

KEYS = (
    JOIN_TIMEOUT_S,
    MIN_HOSTS,
    HEAD_LOST_TIMEOUT_S,
    GCS_PORT,
    INCLUDE_DASHBOARD,
    OBJECT_STORE_MEMORY_MB,
    LEARNER_GROUP,
    ENV_RUNNER_GROUPS,
    AUTH,
    AUTH_TOKEN_SECRET,
)


@dataclass(frozen=True)
class ClusterSettings:
    """How the Ray cluster is formed, from the ``ray.*`` hyperparameters.

    Attributes:
        join_timeout_s: seconds for all hosts to join (master) or to reach the master (worker).
        min_hosts: hosts (master included) that must be alive before training starts.
        head_lost_timeout_s: seconds a worker tolerates an unreachable head before exiting.
        gcs_port: TCP port of the head's GCS.
        include_dashboard: whether the master starts Ray's dashboard (on 127.0.0.1 only).
        object_store_bytes: object store size per host in bytes; None picks it from memory and shm.
        learner_group: instance group for the learner(s) and the algorithm's main process, or None.
        env_runner_groups: instance groups for the env runners; empty for anywhere.
        learner_group_hosts: the hosts of `learner_group`.
        auth: ``ray.auth`` (``"token"`` or ``"disabled"``), None when not given (token, unless the
            environment's ``RAY_AUTH_MODE`` says otherwise: `auth.resolve_auth`).
        auth_token_secret: ``ray.auth_token_secret``, the Secrets Manager secret with the token, or None.
    """

    join_timeout_s: float = 300.0
    min_hosts: int | None = None
    head_lost_timeout_s: float = 15.0
    gcs_port: int = 6379
    include_dashboard: bool = True
    object_store_bytes: int | None = None
    learner_group: str | None = None
    env_runner_groups: tuple[str, ...] = ()
    learner_group_hosts: tuple[str, ...] = ()
    auth: str | None = None
    auth_token_secret: str | None = None

    def required_hosts(self, resource_config: ResourceConfig) -> int:
        """Hosts that must join before training: `min_hosts`, or all of the job's hosts."""
        return self.min_hosts or len(resource_config.hosts)

    @classmethod
    def from_hyperparameters(
        cls, hyperparameters: Mapping[str, Any], resource_config: ResourceConfig
    ) -> ClusterSettings:
        """Read the ``ray.*`` keys of decoded hyperparameters; other keys are ignored.

        Args:
            hyperparameters: name -> decoded value (`environment.decode_hyperparameters`).
            resource_config: the job's hosts and instance groups, to check ``ray.min_hosts`` and the
                group names against.

        Raises:
            HyperparameterError: an unknown ``ray.*`` key (with the closest known one), a value of
                the wrong type or range, or a group name that is not one of the job's instance groups.
        """
        values = {k: v for k, v in hyperparameters.items() if k.startswith(PREFIX)}
        for key in values:
            if key not in KEYS:
                raise validation.unknown(key, KEYS, "the cluster")
        hosts = len(resource_config.hosts)
        min_hosts = values.get(MIN_HOSTS)
        if min_hosts is not None:
            min_hosts = validation.integer(MIN_HOSTS, min_hosts, low=1, high=hosts, why=f"the job has {hosts} host(s)")
        memory_mb = values.get(OBJECT_STORE_MEMORY_MB)
        groups = {g.name for g in resource_config.instance_groups}
        learner_group = values.get(LEARNER_GROUP)
        if learner_group is not None:
            learner_group = _group(LEARNER_GROUP, learner_group, groups)
        env_runner_groups = tuple(
            _group(ENV_RUNNER_GROUPS, name, groups) for name in _names(values.get(ENV_RUNNER_GROUPS, []))
        )
        return cls(
            join_timeout_s=validation.seconds(JOIN_TIMEOUT_S, values.get(JOIN_TIMEOUT_S, cls.join_timeout_s)),
            min_hosts=min_hosts,
            head_lost_timeout_s=validation.seconds(
                HEAD_LOST_TIMEOUT_S, values.get(HEAD_LOST_TIMEOUT_S, cls.head_lost_timeout_s)
            ),
            gcs_port=validation.integer(GCS_PORT, values.get(GCS_PORT, cls.gcs_port), low=1024, high=65535),
            include_dashboard=validation.boolean(INCLUDE_DASHBOARD, values.get(INCLUDE_DASHBOARD, hosts > 1)),
            object_store_bytes=None
            if memory_mb is None
            else validation.integer(OBJECT_STORE_MEMORY_MB, memory_mb, low=76) * 1024 * 1024,
            learner_group=learner_group,
            env_runner_groups=env_runner_groups,
            learner_group_hosts=next((g.hosts for g in resource_config.instance_groups if g.name == learner_group), ()),
            auth=None if values.get(AUTH) is None else validation.choice(AUTH, values[AUTH], AUTH_MODES),
            auth_token_secret=None
            if values.get(AUTH_TOKEN_SECRET) is None
            else validation.string(AUTH_TOKEN_SECRET, values[AUTH_TOKEN_SECRET]),
        )


def _names(value: Any) -> list[str]:
    """A group list given as a JSON list or a comma-separated string."""
    if isinstance(value, str):
        return [name.strip() for name in value.split(",") if name.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise validation.invalid(ENV_RUNNER_GROUPS, "a group name, a comma-separated list or a JSON list of names", value)


def _group(key: str, name: Any, groups: set[str]) -> str:
    if not isinstance(name, str) or name not in groups:
        known = ", ".join(sorted(groups)) or "none (resourceconfig.json has no instance_groups)"
        raise validation.invalid(key, f"one of the job's instance groups: {known}", name)
    return name
