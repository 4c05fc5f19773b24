"""Several containers of the image as the hosts of one training job, the way SageMaker local mode
runs them: a user-defined docker network, host names ``algo-<i>-<5 random chars>`` that resolve on
it, and one ``/opt/ml`` tree per host with its own ``resourceconfig.json``.

Used by tests/container/test_multi_host.py and scripts/bench/bench_cluster.py."""

from __future__ import annotations

import json
import random
import string
import time
from dataclasses import dataclass, field
from pathlib import Path

from devtools import docker, write_job


@dataclass
class Host:
    """One container of the job."""

    name: str
    base: Path
    container: str
    group: str = "homogeneousCluster"

    @property
    def failure(self) -> str | None:
        path = self.base / "output" / "failure"
        return path.read_text() if path.exists() else None

    @property
    def summary(self) -> dict:
        return json.loads((self.base / "output" / "data" / "cluster.json").read_text())


@dataclass
class MultiHostJob:
    """A training job over `len(groups)` hosts; `groups[i]` is the instance group of host i+1."""

    image: str
    root: Path
    hyperparameters: dict
    groups: list[str]
    heterogeneous: bool = False
    hosts: list[Host] = field(default_factory=list)

    def __post_init__(self) -> None:
        suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
        self.network = f"smrl-test-{suffix}"
        names = [
            f"algo-{i}-{''.join(random.choices(string.ascii_lowercase + string.digits, k=5))}"
            for i in range(1, len(self.groups) + 1)
        ]
        instance_groups = [
            {
                "instance_group_name": group,
                "instance_type": "local",
                "hosts": [n for n, g in zip(names, self.groups) if g == group],
            }
            for group in dict.fromkeys(self.groups)
        ]
        for name, group in zip(names, self.groups):
            resource_config = {"current_host": name, "hosts": names, "network_interface_name": "eth0"}
            if self.heterogeneous:
                resource_config.update(current_group_name=group, instance_groups=instance_groups)
            base = write_job(self.root / name, self.hyperparameters, resourceconfig=resource_config, inputdataconfig={})
            self.hosts.append(Host(name, base, f"{self.network}-{name}", group))
        docker("network", "create", self.network, check=True)

    def start(self, host: Host, *command: str) -> None:
        """`docker run -d` the host's container on the job network, with `command` (`train` if none)."""
        docker(
            "run",
            "-d",
            "--name",
            host.container,
            "--hostname",
            host.name,
            "--network",
            self.network,
            "--network-alias",
            host.name,
            "-v",
            f"{host.base}:/opt/ml",
            self.image,
            *(command or ("train",)),
            check=True,
        )

    def start_all(self, *command: str) -> float:
        """Start every host; returns the time the last one was started (time.time())."""
        for host in self.hosts:
            self.start(host, *command)
        return time.time()

    def wait(self, host: Host, timeout: float) -> int | None:
        """The host's exit status, or None if it is still running after `timeout` seconds."""
        result = docker("wait", host.container, timeout=timeout) if timeout > 0 else None
        if result is None or result.returncode != 0:
            return None
        return int(result.stdout.strip())

    def wait_all(self, timeout: float) -> dict[str, int | None]:
        deadline = time.monotonic() + timeout
        codes = {}
        for host in self.hosts:
            try:
                codes[host.name] = self.wait(host, max(1.0, deadline - time.monotonic()))
            except Exception:  # subprocess timeout: still running
                codes[host.name] = None
        return codes

    def finished_at(self, host: Host) -> float:
        """When the host's container exited (Unix time, from docker inspect)."""
        from datetime import datetime

        text = docker("inspect", "-f", "{{.State.FinishedAt}}", host.container, check=True).stdout.strip()
        return datetime.fromisoformat(text[:26].rstrip("Z") + "+00:00").timestamp()

    def logs(self, host: Host) -> str:
        out = docker("logs", host.container)
        return out.stdout + out.stderr

    def wait_for_log(self, host: Host, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.logs(host):
                return True
            time.sleep(1)
        return False

    def all_logs(self) -> str:
        return "\n".join(f"===== {h.name}\n{self.logs(h)[-6000:]}" for h in self.hosts)

    def cleanup(self) -> None:
        for host in self.hosts:
            docker("rm", "-f", host.container)
        docker("network", "rm", self.network)
