"""Helpers that the scripts and the tests share, written once.

Only the standard library is imported at module level, so every Python that runs one of the
scripts can import it: the project's venv, the image's (``docker run -v scripts:/scripts``) and the
d3rlpy venv of ``scripts/bench/``. Who imports it:

- ``scripts/*.py``: their own folder is ``sys.path[0]``;
- ``scripts/bench/*.py``: they put ``scripts/`` on ``sys.path`` first;
- the tests: ``scripts`` is on pytest's ``pythonpath`` (pyproject.toml).

Nothing here imports from ``tests/``, and no script does.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: The repository root (this file is ``scripts/devtools.py``).
REPO = Path(__file__).resolve().parents[1]


def docker_cli() -> str:
    """The docker client to run: ``$DOCKER``, else Debian's ``/usr/bin/docker``, else ``docker`` on
    the PATH (the same order as ``scripts/lib.sh`` without its buildx check: these callers do not build)."""
    return os.environ.get("DOCKER") or ("/usr/bin/docker" if os.path.exists("/usr/bin/docker") else "docker")


def docker(*args: str, timeout: float = 600, check: bool = False) -> subprocess.CompletedProcess:
    """Run ``docker ARGS`` with stdout and stderr captured as text.

    Raises `subprocess.TimeoutExpired` after `timeout` seconds, and `subprocess.CalledProcessError`
    on a non-zero exit when `check` is true.
    """
    return subprocess.run([docker_cli(), *args], capture_output=True, text=True, timeout=timeout, check=check)


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 now (the kernel's pick; another process may take it
    before the caller binds it, which is unlikely on a loopback port just released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_ping(
    url: str, timeout: float = 60, check: Callable[[], None] | None = None, interval: float = 0.1
) -> float:
    """Poll ``GET {url}/ping`` every `interval` seconds until it answers 200; returns the seconds waited.

    Anything else (connection refused or reset, a 5xx, a read timeout: Ray Serve's proxy holds
    ``/ping`` until its replica is up) means "not yet". `check`, called between attempts, may raise
    to stop waiting early (e.g. when the server process has exited). Raises `TimeoutError` naming
    the URL when no 200 came within `timeout` seconds.
    """
    start = time.monotonic()
    while True:
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - start
        except (OSError, http.client.HTTPException):  # URLError and HTTPError are OSErrors
            pass
        if check is not None:
            check()
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{url}/ping answered no 200 within {timeout} s")
        time.sleep(interval)


def lock_pin(package: str, variant: str = "cpu") -> str:
    """The version `package` is pinned to in ``docker/requirements-<variant>.txt`` (the image's lock),
    without a local label: ``lock_pin("torch")`` is ``"2.13.0"`` for ``torch==2.13.0+cpu``.

    Raises `LookupError` when the lock pins no such package. ``scripts/lib.sh``'s ``lock_pin`` is the
    same reading for the shell scripts.
    """
    lock = REPO / "docker" / f"requirements-{variant}.txt"
    match = re.search(rf"^{re.escape(package)}==([^\s+\\]+)", lock.read_text(), re.M | re.I)
    if match is None:
        raise LookupError(f"{lock} pins no {package}")
    return match.group(1)


def write_job(base: Path, hyperparameters: dict | None = None, **config_files: dict) -> Path:
    """Make a SageMaker-style base dir (what ``SAGEMAKER_BASE_DIR`` or the ``/opt/ml`` mount points
    at): ``input/config/hyperparameters.json`` with every value as a string, JSON-encoded unless it
    is one already (as SageMaker writes them), plus ``input/config/<name>.json`` for each other
    config file given as ``name=content``. Returns `base`."""
    config = base / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    if hyperparameters is not None:
        encoded = {k: v if isinstance(v, str) else json.dumps(v) for k, v in hyperparameters.items()}
        (config / "hyperparameters.json").write_text(json.dumps(encoded))
    for name, content in config_files.items():
        (config / f"{name}.json").write_text(json.dumps(content))
    return base


def job_environ(base: Path, **extra: str) -> dict[str, str]:
    """The environment the image gives `train`: our training module and a base dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "SAGEMAKER_"))}
    env.update(
        SAGEMAKER_BASE_DIR=str(base),
        SAGEMAKER_TRAINING_MODULE="sagemaker_ray_rl.train:main",
        RAY_USAGE_STATS_ENABLED="0",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def rollout(
    env: Any,
    act: Callable[[Any], Any],
    episodes: int,
    seed: int,
    gamma: float = 1.0,
    on_episode: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Play `episodes` episodes of the Gymnasium env `env` (reset with seeds ``seed``, ``seed + 1``,
    ...), each action ``act(observation)``; returns each episode's return, discounted by `gamma`
    per step (1: the plain sum of rewards). ``on_episode(index, return)`` is called as each
    episode ends (e.g. to print progress).

    The action goes to ``env.step`` as `act` returns it, except that for a ``Box`` action space a
    list (a JSON answer) becomes an array of the space's dtype.
    """
    import numpy as np

    box = type(env.action_space).__name__ == "Box"
    returns = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        total, discount, done = 0.0, 1.0, False
        while not done:
            action = act(obs)
            if box:
                action = np.asarray(action, dtype=env.action_space.dtype)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += discount * float(reward)
            discount *= gamma
            done = terminated or truncated
        returns.append(total)
        if on_episode is not None:
            on_episode(episode, total)
    return returns
