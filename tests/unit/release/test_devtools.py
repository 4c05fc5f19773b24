"""scripts/devtools.py, the helpers the scripts and the tests share, and the rule that no script
imports from tests/."""

from __future__ import annotations

import ast
import json
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from devtools import REPO, free_port, lock_pin, rollout, wait_for_ping, write_job

SCRIPTS = REPO / "scripts"
PYTHON_SCRIPTS = sorted(p for p in SCRIPTS.rglob("*.py") if "__pycache__" not in p.parts)
#: Top-level names under tests/ (pytest's pythonpath): what a script must not import.
TEST_MODULES = {"helpers", "conftest", "container", "integration", "unit"}


def test_scripts_import_nothing_from_tests():
    offenders = []
    for path in PYTHON_SCRIPTS:
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(REPO)}: import {n}" for n in names if n.split(".")[0] in TEST_MODULES]
        if '"tests"' in source or "'tests'" in source:
            offenders.append(f"{path.relative_to(REPO)}: names the tests folder")
    assert offenders == []


@pytest.mark.parametrize("script", PYTHON_SCRIPTS, ids=lambda p: str(p.relative_to(SCRIPTS)))
def test_every_script_finds_its_imports_from_any_working_directory(script: Path, tmp_path: Path):
    """Run as the README and docs/benchmarks.md run them (``python scripts/bench/X.py``), from another
    directory: `--help` (or, for a module without a command line, the import) succeeds."""
    if script.name == "audit_report.py":
        pytest.skip("audit_report.py takes positional arguments only: tests/unit/release/test_audit_report.py")
    if script.name in ("devtools.py", "multihost_job.py"):
        command = [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(SCRIPTS)!r}); import {script.stem}"]
    else:  # crosscheck_d3rlpy.py too: it imports d3rlpy after parsing its arguments
        command = [sys.executable, str(script), "--help"]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_free_port_can_be_bound_on_loopback():
    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


class _SlowToStart(BaseHTTPRequestHandler):
    """/ping: 503 for the first `failures` requests, then 200."""

    failures = 3
    seen = 0

    def do_GET(self):  # noqa: N802 (http.server's name)
        type(self).seen += 1
        self.send_response(200 if self.path == "/ping" and type(self).seen > self.failures else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_wait_for_ping_waits_through_5xx_until_200():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowToStart)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        seconds = wait_for_ping(f"http://127.0.0.1:{server.server_port}", timeout=10, interval=0.01)
    finally:
        server.shutdown()
    assert _SlowToStart.seen == 4 and 0 < seconds < 10


def test_wait_for_ping_names_the_url_when_nothing_answers():
    url = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(TimeoutError, match=rf"{url}/ping answered no 200 within 0.3 s"):
        wait_for_ping(url, timeout=0.3, interval=0.05)
    assert time.monotonic() - start < 5


def test_wait_for_ping_stops_when_check_raises():
    def dead() -> None:
        raise AssertionError("server exited with 3")

    with pytest.raises(AssertionError, match="exited with 3"):
        wait_for_ping(f"http://127.0.0.1:{free_port()}", timeout=60, check=dead)


@pytest.mark.parametrize(("package", "variant"), [("torch", "cpu"), ("ray", "cpu"), ("torch", "cuda")])
def test_lock_pin_is_the_bare_version_and_the_shell_reads_the_same(package: str, variant: str):
    lock = REPO / "docker" / f"requirements-{variant}.txt"
    version = lock_pin(package, variant)
    assert version and all(part.isdigit() for part in version.split("."))
    assert f"\n{package}=={version}" in lock.read_text()  # torch: followed by +cpu in the CPU lock
    shell = subprocess.run(
        ["bash", "-c", f'source scripts/lib.sh && lock_pin {package} "{lock}"'],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"DOCKER": "docker", "PATH": "/usr/bin:/bin"},
    )
    assert shell.returncode == 0 and shell.stdout == f"{version}\n", shell.stderr


def test_lock_pin_of_a_package_not_in_the_lock_fails_naming_it():
    with pytest.raises(LookupError, match="pins no no-such-package"):
        lock_pin("no-such-package")


def test_write_job_writes_hyperparameters_as_sagemaker_does(tmp_path: Path):
    base = write_job(tmp_path, {"lr": 0.001, "env": "CartPole-v1", "stop": {"a": 1}}, resourceconfig={"hosts": ["h"]})
    config = base / "input" / "config"
    assert json.loads((config / "hyperparameters.json").read_text()) == {
        "lr": "0.001",
        "env": "CartPole-v1",
        "stop": '{"a": 1}',
    }
    assert json.loads((config / "resourceconfig.json").read_text()) == {"hosts": ["h"]}


def test_rollout_returns_each_episodes_return_seeded_in_order():
    env = gym.make("CartPole-v1")
    seen = []
    returns = rollout(env, lambda obs: 0, 3, seed=5, on_episode=lambda i, r: seen.append((i, r)))
    expected = []
    for i in range(3):  # the same episodes by hand
        env.reset(seed=5 + i)
        steps, done = 0, False
        while not done:
            _, _, terminated, truncated, _ = env.step(0)
            steps, done = steps + 1, terminated or truncated
        expected.append(float(steps))
    assert returns == expected and seen == list(enumerate(expected))
    discounted = rollout(env, lambda obs: 0, 1, seed=5, gamma=0.5)
    assert discounted == [pytest.approx(sum(0.5**t for t in range(int(expected[0]))))]


def test_rollout_turns_a_json_box_action_into_an_array_of_the_space_dtype():
    env = gym.make("Pendulum-v1", max_episode_steps=3)
    actions = []

    def act(obs):
        return [0.5]  # what a JSON answer holds

    def step(action):
        actions.append(action)
        return original(action)

    original, env.step = env.step, step
    returns = rollout(env, act, 1, seed=0)
    assert len(returns) == 1 and np.isfinite(returns[0])
    assert len(actions) == 3
    assert all(isinstance(a, np.ndarray) and a.dtype == np.float32 and a.tolist() == [0.5] for a in actions)
