"""A user entry point's command line and failure reason (`training.user_script`)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from sagemaker_ray_rl.contract.failure import FAILURE_REASON_LIMIT
from sagemaker_ray_rl.training.user_script import (
    failure_reason,
    install_failure_reason,
    script_arguments,
)


def stderr_of(script: str, *args: str) -> tuple[int, str]:
    """Run `script` from a file (tracebacks then show its code lines); exit code and stderr."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.py"
        path.write_text(textwrap.dedent(script))
        proc = subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True)
    return proc.returncode, proc.stderr


def test_the_images_own_hyperparameters_are_not_command_line_arguments():
    args = script_arguments(
        {
            "episode-limit": 20,
            "lr": 0.001,
            "rl.training.config.lr": 0.001,
            "ray.gcs_port": 6380,
            "ray.join_timeout_s": 60,
            "mode": "offline",
            "offline.algorithm": "cql",
            "_tuning_objective_metric": "episode_return_mean",
        }
    )
    assert args == ["--episode-limit", "20", "--lr", "0.001", "--rl.training.config.lr", "0.001"]


def test_a_python_exception_gives_its_type_message_and_last_frames():
    code, stderr = stderr_of(
        """
        def load(name):
            return {"a": 1}[name]
        def main():
            load("missing-key")
        main()
        """
    )
    reason = failure_reason("noise before\n" + stderr, code, "train.py")
    assert reason.startswith("KeyError: 'missing-key' (entry point train.py, exit code 1); traceback, last lines:")
    # The innermost frame and its code line come last.
    assert reason.endswith('line 3, in load | return {"a": 1}[name]')
    assert "noise before" not in reason and "^" not in reason


def test_a_chained_exception_reports_the_last_one():
    code, stderr = stderr_of(
        """
        try:
            import no_such_module_xyz
        except ImportError as exc:
            raise RuntimeError("install no_such_module_xyz in requirements.txt") from exc
        """
    )
    reason = failure_reason(stderr, code, "train.py")
    assert reason.startswith("RuntimeError: install no_such_module_xyz in requirements.txt (entry point train.py")


def test_an_argparse_error_without_a_traceback_gives_the_scripts_last_lines():
    code, stderr = stderr_of(
        """
        import argparse
        p = argparse.ArgumentParser(prog="train.py")
        p.add_argument("--lr", type=float)
        p.parse_args()
        """,
        "--ray.gcs_port",
        "6380",
    )
    toolkit = (
        "2026-12-01 15:34:10,324 sagemaker-training-toolkit INFO     Invoking user script\n"
        "Invoking script with the following command:\n\n/usr/bin/python3 -- train.py --ray.gcs_port 6380\n\n"
        "2026-12-01 15:34:10,324 sagemaker-training-toolkit INFO     Exceptions not imported\n"
    )
    reason = failure_reason(toolkit + stderr, code, "train.py")
    assert reason == (
        "The entry point train.py, exit code 2 failed: usage: train.py [-h] [--lr LR] | "
        "train.py: error: unrecognized arguments: --ray.gcs_port 6380"
    )


def test_a_script_killed_for_memory_says_so_and_nothing_written_says_so():
    reason = failure_reason("Invoking script with the following command:\n\npython x.py\n\n", 137, "x.py")
    assert reason == (
        "The entry point x.py, exit code 137, killed by SIGKILL: out of memory? failed and wrote nothing to "
        "stderr; the job log holds its output."
    )


def test_a_long_error_fits_sagemakers_failure_reason():
    code, stderr = stderr_of(
        """
        def deep(n):
            if n == 0:
                raise ValueError("x" * 5000)
            deep(n - 1)
        deep(40)
        """
    )
    reason = failure_reason(stderr, code, "train.py")
    assert len(reason) <= FAILURE_REASON_LIMIT
    assert reason.startswith("ValueError: xxxx") and "(entry point train.py, exit code 1)" in reason
    assert "in deep" in reason


def test_ray_init_with_num_cpus_on_the_jobs_cluster_says_what_to_change():
    stderr = (
        "Traceback (most recent call last):\n"
        '  File "/opt/ml/code/train.py", line 4, in <module>\n'
        "    ray.init(num_cpus=2, num_gpus=0)\n"
        "ValueError: When connecting to an existing cluster, num_cpus and num_gpus must not be provided.\n"
    )
    reason = failure_reason(stderr, 1, "train.py")
    assert reason.startswith(
        "ValueError: When connecting to an existing cluster, num_cpus and num_gpus must not be provided. "
        "(entry point train.py, exit code 1); to fix: on several hosts the image has started Ray over all of them "
        "before the script (RAY_ADDRESS): call ray.init() without num_cpus and num_gpus"
    )
    assert reason.endswith("line 4, in <module> | ray.init(num_cpus=2, num_gpus=0)")


#: pip 25's output for a source dir whose setup.py pins another Ray under the image's constraints
#: (stderr and stdout as the job log shows them; `pip install . -r requirements.txt`).
PIP_CONFLICT_STDERR = """\
2026-12-01 23:30:01,100 sagemaker-training-toolkit INFO     Installing module.
WARNING: Location 'file:///opt/pypi-more/simple/ray/' is ignored: it is neither a file nor a directory.
ERROR: Cannot install user-rl-pkg==0.1 because these package versions have conflicting dependencies.
ERROR: ResolutionImpossible: for help visit https://pip.pypa.io/en/latest/topics/dependency-resolution/#dealing-with-dependency-conflicts
"""
PIP_CONFLICT_STDOUT = """\
Processing ./.
  Preparing metadata (pyproject.toml): finished with status 'done'

The conflict is caused by:
    user-rl-pkg 0.1 depends on ray==2.9.3
    The user requested (constraint) ray==2.60.0

To fix this you could try to:
1. loosen the range of package versions you've specified
2. remove package versions to allow pip to attempt to solve the dependency conflict
"""


def test_a_pip_conflict_with_the_images_pins_names_both_pins_and_what_to_change():
    command = ["/opt/venv/bin/python3", "-m", "pip", "install", ".", "-r", "requirements.txt"]
    reason = install_failure_reason(PIP_CONFLICT_STDERR, "1", command, stdout=PIP_CONFLICT_STDOUT)
    assert reason.startswith(
        "pip could not install the source dir (/opt/venv/bin/python3 -m pip install . -r requirements.txt, "
        "exit code 1): ERROR: Cannot install user-rl-pkg==0.1 because"
    )
    assert (
        "| The conflict is caused by: | user-rl-pkg 0.1 depends on ray==2.9.3 | The user requested (constraint) ray==2.60.0"
        in reason
    )
    assert reason.endswith("remove or relax the conflicting requirement in setup.py or requirements.txt")
    assert "loosen the range" not in reason and "Installing module" not in reason and "WARNING" not in reason
    assert len(reason) <= FAILURE_REASON_LIMIT


def test_a_pip_failure_without_a_conflict_keeps_pips_error_within_the_limit():
    stderr = "ERROR: Could not find a version that satisfies the requirement gym-foo==9 (from versions: none)\n" * 40
    reason = install_failure_reason(stderr, 1, "python3 -m pip install -r requirements.txt")
    assert reason.startswith(
        "pip could not install the source dir (python3 -m pip install -r requirements.txt, exit code 1): "
        "ERROR: Could not find a version that satisfies the requirement gym-foo==9"
    )
    assert "to fix" not in reason and len(reason) <= FAILURE_REASON_LIMIT
