"""One Ray node per host: the ``ray start`` command line, its resources, and the process that runs it.

The node runs as ``ray start --block``, a child process this module owns: stopping it (SIGTERM) makes
Ray stop exactly the processes it started. ``ray stop`` is not used, because it kills every Ray
process on the machine, including ones that are not ours.

Each node carries custom resources that name where it is (Ray's resources are the only thing its
scheduler can place actors by; ``ray start`` 2.60 has no node labels option):

- ``instance_group:<name>``: the SageMaker instance group of the host (resourceconfig.json);
- ``sagemaker_host:<name>``: the host itself, so Ray's own state says which host ran an actor;
- ``learner_host`` / ``env_runner_host``: present on the hosts of ``ray.learner_group`` /
  ``ray.env_runner_groups``; RLlib's ``custom_resources_*`` settings request them (`placement`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from sagemaker_ray_rl.cluster.auth import RayAuth
from sagemaker_ray_rl.cluster.quiet import LineForwarder
from sagemaker_ray_rl.cluster.settings import ClusterSettings

GROUP_RESOURCE_PREFIX = "instance_group:"
HOST_RESOURCE_PREFIX = "sagemaker_host:"
LEARNER_RESOURCE = "learner_host"
ENV_RUNNER_RESOURCE = "env_runner_host"

#: Ray refuses an object store smaller than this (``ray_constants.OBJECT_STORE_MINIMUM_MEMORY_BYTES``).
OBJECT_STORE_MINIMUM_BYTES = 75 * 1024 * 1024
#: Share of memory Ray gives the object store by default (``ray start --help``, Ray 2.60).
OBJECT_STORE_MEMORY_SHARE = 0.3
#: Room left in /dev/shm for Ray's other shared memory and the user's.
SHM_HEADROOM = 0.9


def ray_environment(auth: RayAuth, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The variables for Ray processes and drivers of the job, added to `environ` (os.environ).

    `auth`'s variables (``RAY_AUTH_MODE`` stated explicitly, since Ray 2.60 turns token
    authentication on by itself for a bare ``ray.init()``, and ``RAY_AUTH_TOKEN_PATH`` for a derived
    token: `auth.RayAuth.environment`), and no usage stats (no network).

    Raises:
        ClusterError: a derived token cannot be written to its file.
    """
    env = dict(os.environ if environ is None else environ)
    env.update(auth.environment())
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    return env


@dataclass(frozen=True)
class ObjectStorePlan:
    """Where and how big the object store of a node is.

    Attributes:
        size_bytes: ``--object-store-memory``.
        directory: ``--plasma-directory``; None for Ray's default, /dev/shm.
        reason: one sentence for the job log.
    """

    size_bytes: int
    directory: str | None
    reason: str


def plan_object_store(
    requested_bytes: int | None,
    *,
    shm_free_bytes: int,
    memory_bytes: int,
    fallback_dir: str = "/tmp",
) -> ObjectStorePlan:
    """Size the object store to fit the container's /dev/shm, or put it in `fallback_dir`.

    Docker gives containers a 64 MB /dev/shm unless told otherwise, and SageMaker local mode sets no
    ``shm_size``; Ray would then fall back to /tmp with a warning. This makes the choice explicit:
    the wanted size (`requested_bytes`, else 30% of memory, Ray's default) goes in /dev/shm when it
    fits within 90% of the free shm, else 90% of the shm when that is at least 512 MB, else in
    `fallback_dir` (memory-mapped files: slower, but RLlib moves little data through the store).

    Args:
        requested_bytes: ``ray.object_store_memory_mb`` in bytes, or None.
        shm_free_bytes: free bytes in /dev/shm.
        memory_bytes: memory of the host (or container limit) in bytes.
        fallback_dir: the directory for a store that does not fit in /dev/shm.
    """
    wanted = requested_bytes or max(OBJECT_STORE_MINIMUM_BYTES, int(memory_bytes * OBJECT_STORE_MEMORY_SHARE))
    room = int(shm_free_bytes * SHM_HEADROOM)
    mb = 1024 * 1024
    if wanted <= room:
        return ObjectStorePlan(wanted, None, f"object store {wanted // mb} MB in /dev/shm")
    if requested_bytes is None and room >= 512 * mb:
        return ObjectStorePlan(room, None, f"object store {room // mb} MB in /dev/shm (90% of its free space)")
    return ObjectStorePlan(
        wanted,
        fallback_dir,
        f"object store {wanted // mb} MB in {fallback_dir}: /dev/shm has {shm_free_bytes // mb} MB free "
        "(docker run --shm-size raises it; SageMaker local mode sets none)",
    )


def host_object_store(requested_bytes: int | None) -> ObjectStorePlan:
    """`plan_object_store` for this host: free /dev/shm (0 when absent) and the memory limit."""
    try:
        shm_free = shutil.disk_usage("/dev/shm").free
    except OSError:
        shm_free = 0
    return plan_object_store(requested_bytes, shm_free_bytes=shm_free, memory_bytes=_memory_limit())


def node_resources(host: str, group: str, settings: ClusterSettings) -> dict[str, float]:
    """The custom resources of the node on `host` in instance group `group` (module docstring)."""
    resources = {f"{GROUP_RESOURCE_PREFIX}{group}": 1.0, f"{HOST_RESOURCE_PREFIX}{host}": 1.0}
    if settings.learner_group == group:
        resources[LEARNER_RESOURCE] = 1.0
    if group in settings.env_runner_groups:
        resources[ENV_RUNNER_RESOURCE] = 1.0
    return resources


@dataclass(frozen=True)
class NodeSpec:
    """What one ``ray start`` is given.

    Attributes:
        ip: the address the node advertises (``--node-ip-address``).
        num_cpus: CPUs from the contract (``SM_NUM_CPUS``).
        num_gpus: GPUs from the contract (``SM_NUM_GPUS``).
        resources: custom resources (`node_resources`).
        object_store: `ObjectStorePlan`.
    """

    ip: str
    num_cpus: int
    num_gpus: int
    resources: dict[str, float] = field(default_factory=dict)
    object_store: ObjectStorePlan | None = None


def head_command(spec: NodeSpec, settings: ClusterSettings) -> list[str]:
    """``ray start --head --block`` bound to the node's IP, dashboard on 127.0.0.1 only."""
    return [
        *_ray_start(spec),
        "--head",
        f"--port={settings.gcs_port}",
        f"--include-dashboard={str(settings.include_dashboard).lower()}",
        "--dashboard-host=127.0.0.1",
    ]


def worker_command(spec: NodeSpec, head_address: str) -> list[str]:
    """``ray start --address=HEAD --block`` for a worker node."""
    return [*_ray_start(spec), f"--address={head_address}"]


def _ray_start(spec: NodeSpec) -> list[str]:
    ray = str(Path(sys.executable).with_name("ray"))
    command = [
        ray if os.path.exists(ray) else "ray",
        "start",
        "--block",
        "--disable-usage-stats",
        f"--node-ip-address={spec.ip}",
        f"--num-cpus={spec.num_cpus}",
        f"--num-gpus={spec.num_gpus}",
        f"--resources={json.dumps(spec.resources, sort_keys=True)}",
    ]
    if spec.object_store is not None:
        command.append(f"--object-store-memory={spec.object_store.size_bytes}")
        if spec.object_store.directory:
            command.append(f"--plasma-directory={spec.object_store.directory}")
    return command


class RayNodeProcess:
    """A running ``ray start --block``: the Ray processes of this host, owned by this process.

    Its output goes to this process's stdout (the job log), line by line, without its banner
    (`quiet.LineForwarder`); `output_tail` has its last lines for error messages.
    """

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.command = command
        self.env = env
        self._start()

    def _start(self) -> None:
        self.process = subprocess.Popen(
            self.command,
            env=self.env,
            start_new_session=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
        self.forwarder = LineForwarder(self.process.stdout)
        threading.Thread(target=self.forwarder.run, name="ray-start-output", daemon=True).start()
        self.started = time.monotonic()

    def restart(self) -> None:
        """Start the same ``ray start`` again (after it exited)."""
        self.stop()
        self._start()

    def output_tail(self) -> str:
        """The last lines ``ray start`` printed (banner included)."""
        return self.forwarder.last_lines()

    def running(self) -> bool:
        """Whether ``ray start`` (and so the node) is still up."""
        return self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        """``ray start``'s exit status once it ended, else None."""
        return self.process.poll()

    def stop(self, timeout_s: float = 20.0) -> None:
        """Stop the node: SIGTERM (Ray stops the processes it started), SIGKILL to the whole process
        group after `timeout_s` seconds."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(timeout=5)


class RayHeadProcess(RayNodeProcess):
    """The head's ``ray start --block``. Stopping it also removes the head's address from Ray's
    ``<temp dir>/ray_current_cluster`` file, which ``ray start --head`` writes and a later bare
    ``ray.init()`` on the machine would otherwise try to join (``ray stop`` removes it; SIGTERM to
    ``ray start`` does not)."""

    def __init__(self, command: list[str], env: dict[str, str], address: str) -> None:
        super().__init__(command, env)
        self.address = address

    def stop(self, timeout_s: float = 20.0) -> None:
        """`RayNodeProcess.stop`, then forget the address if it is still ours."""
        super().stop(timeout_s)
        from ray._common.utils import get_ray_address_file  # noqa: PLC0415  (Ray's API in the driver only: docs/architecture.md)

        path = Path(get_ray_address_file(None))
        try:
            if path.read_text().strip() == self.address:
                path.unlink()
        except OSError:
            pass


def _memory_limit() -> int:
    """Bytes of memory this container may use: its cgroup limit when set, else the host's."""
    total = psutil.virtual_memory().total
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            return min(total, int(text))
    return total
