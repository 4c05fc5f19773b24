"""`gunicorn_app.gunicorn_options`: every option is one gunicorn knows, workers are recycled with
jitter, and the control socket is off; `gunicorn_app.exit_without_native_teardown` ends a worker
with gunicorn's exit status."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gunicorn.config import Config
from gunicorn.workers.ggevent import GeventWorker

from sagemaker_ray_rl.contract.environment import Environment
from sagemaker_ray_rl.serving.gunicorn_app import StoppingGeventWorker, exit_without_native_teardown, gunicorn_options


def configured(tmp_path: Path, **env: str) -> Config:
    environment = Environment.from_environ({"SAGEMAKER_BASE_DIR": str(tmp_path), **env})
    config = Config()
    for key, value in gunicorn_options(environment).items():
        config.set(key, value)  # raises AttributeError for a setting gunicorn does not have
    return config


def test_workers_are_recycled_with_jitter_and_the_control_socket_is_off(tmp_path):
    config = configured(tmp_path)
    assert (config.max_requests, config.max_requests_jitter) == (100_000, 10_000)
    assert config.control_socket_disable is True
    assert config.worker_class is StoppingGeventWorker and issubclass(StoppingGeventWorker, GeventWorker)
    assert config.preload_app


def test_recycling_follows_the_variable_and_0_turns_it_off(tmp_path):
    config = configured(tmp_path, SAGEMAKER_RAY_RL_MAX_REQUESTS="500")
    assert (config.max_requests, config.max_requests_jitter) == (500, 50)
    config = configured(tmp_path, SAGEMAKER_RAY_RL_MAX_REQUESTS="0")
    assert (config.max_requests, config.max_requests_jitter) == (0, 0)


EXITING_WORKER = """
import sys
from sagemaker_ray_rl.serving.gunicorn_app import exit_without_native_teardown
import onnxruntime  # its threads, then a fork: the child's teardown would wait on them
import os
pid = os.fork()
if pid == 0:
    try:  # as gunicorn's spawn_worker ends a worker
        sys.exit(int(sys.argv[1]))
    finally:
        print("worker exiting", flush=True)
        exit_without_native_teardown(None, None)
_, status = os.waitpid(pid, 0)
print("status", os.waitstatus_to_exitcode(status))
"""


def test_a_worker_leaves_with_gunicorns_exit_status_without_the_forked_onnx_runtime_teardown():
    for code in (0, 3):
        # Without the hook the forked child never exits (onnxruntime 1.32): the timeout would fire.
        run = subprocess.run(
            [sys.executable, "-c", EXITING_WORKER, str(code)], capture_output=True, text=True, timeout=60
        )
        assert run.returncode == 0, run.stderr
        assert run.stdout.splitlines() == ["worker exiting", f"status {code}"]


def test_outside_gunicorns_exit_path_the_hook_does_nothing():
    assert exit_without_native_teardown(None, None) is None
