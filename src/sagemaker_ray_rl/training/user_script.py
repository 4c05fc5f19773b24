"""A user entry point (``sagemaker_program``), run with the training toolkit's own functions.

The master runs the script as the toolkit would without us (``SM_*`` variables, ``SM_HPS``,
``requirements.txt``, hyperparameters as command-line arguments), with three differences a user sees:

- the image's own hyperparameters (`environment.is_image_hyperparameter`: ``ray.*``, ``mode``,
  ``offline.*``, SageMaker's reserved ``_*``; the toolkit already drops ``sagemaker_*``) are not
  passed as command-line arguments, so an ``argparse`` script that declares only its own options
  works; they stay in ``SM_HPS`` and ``SM_HP_<NAME>``;
- when the script fails, the failure file (SageMaker's ``FailureReason``) names its error: the
  exception type and message and the last lines of its traceback, taken from the script's stderr
  (`failure_reason`), instead of the toolkit's ``ExecuteUserScriptError ... ErrorMessage ""``;
- a ``requirements.txt`` that would replace a package the image pins (``ray==2.9.3``) fails the job
  before pip runs, naming the line and the image's version (`image_pins`); when pip itself fails (a
  ``setup.py`` whose ``install_requires`` conflicts with the image's pins, a package that does not
  exist), the failure file gives pip's error and the conflict it explains (`install_failure_reason`).

How the script stops is `graceful_stop`'s: SIGTERM (``StopTrainingJob``, a spot interruption) is
passed on to it (`graceful_stop.ForwardSigterm`), with the built-in experiment's time to checkpoint
and exit (``names.STOP_BUDGET_S``, 90 s of SageMaker's 120) before it is killed, and a Tune run that
can never be placed stops it (`graceful_stop.UnplaceableTuneRun`).

The script's Tune runs write to the job's checkpoint dir (``RAY_STORAGE``) and checkpoint every
trial at its end (``RAY_TUNE_CALLBACKS``), so a script that saves no model still leaves one that
the image exports (`user_checkpoints`).

Worker hosts only install its source dir, so the modules it imports load in their env runners.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sagemaker_ray_rl.contract import names
from sagemaker_ray_rl.contract.environment import Environment, is_image_hyperparameter
from sagemaker_ray_rl.contract.failure import FAILURE_REASON_LIMIT, write_failure
from sagemaker_ray_rl.training.graceful_stop import ForwardSigterm, UnplaceableTuneRun, shorten_tune_placement_check
from sagemaker_ray_rl.training.image_pins import CONSTRAINTS_FILE, check_source_dir
from sagemaker_ray_rl.training.script_output import output_tail
from sagemaker_ray_rl.training.user_checkpoints import script_environment

#: ``RAY_ADDRESS`` of a one-host script: Ray 2.60's ``ray.init()`` (any arguments, ``address=None`` or
#: ``"auto"``) then starts a new local instance (`ray._private.services.get_ray_address_from_environment`)
#: and never joins another one found in ``/tmp/ray/ray_current_cluster``.
LOCAL_RAY_ADDRESS = "local"

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
#: A log line of the toolkit itself (``2026-12-01 15:34:10,324 sagemaker-training-toolkit INFO ...``).
_TOOLKIT_LOG = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ sagemaker-training-toolkit ")
#: An informational log line (Ray's, the toolkit's, logging's default format): not the script's error.
_INFO_LOG = re.compile(r"^\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d[,.]\d+\s.*\b(DEBUG|INFO|WARNING)\b")
#: The ``^^^^`` / ``~~~^^`` markers under a traceback's code line (Python 3.11).
_CARETS = re.compile(r"^[\s^~]+$")
#: The last line of a Python traceback: ``[module.]Name[(Cause)][: message]`` at column 0.
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(\([\w.]+\))?(: .*)?$")
_TRACEBACK_HEAD = "Traceback (most recent call last):"
#: What the toolkit logs just before it starts the script (``logging_config.log_script_invocation``).
_INVOCATION_MARKER = "Invoking script with the following command:"
#: Errors of scripts written for one machine, and what to change on SageMaker: text in the error -> hint.
HINTS = {
    "When connecting to an existing cluster, num_cpus and num_gpus must not be provided": (
        "on several hosts the image has started Ray over all of them before the script (RAY_ADDRESS): "
        "call ray.init() without num_cpus and num_gpus (ray.cluster_resources() gives the job's totals)"
    ),
}


def fetch_source_dir() -> None:
    """Put the user's source dir (``sagemaker_submit_directory``: an S3 tarball, a local dir or
    tarball) in the toolkit's code dir, with the toolkit's own `files.download_and_extract`, and
    check its ``requirements.txt`` against the image's pins (`image_pins.check_source_dir`) before
    any pip runs. The toolkit's own download in `entry_point.run` then finds the code dir filled and
    leaves it as it is, so the source dir is fetched once. Cheap to call again.

    Raises:
        RequirementsError: ``requirements.txt`` would replace a package the image pins.
    """
    from sagemaker_training import environment as toolkit_environment  # noqa: PLC0415  (the toolkit reads the job at import: docs/architecture.md)
    from sagemaker_training import files  # noqa: PLC0415  (the toolkit reads the job at import: docs/architecture.md)

    env = toolkit_environment.Environment()
    files.download_and_extract(uri=env.module_dir, path=toolkit_environment.code_dir)
    check_source_dir(Path(toolkit_environment.code_dir))


def install_user_code(environment: Environment) -> None:
    """On a worker host: put the user's source dir (``sagemaker_submit_directory``) in the code dir
    and install its ``requirements.txt`` (or, with a ``setup.py``, the source dir itself), with the
    training toolkit's own functions, as `run_user_entry_point` does on the master, without running
    the script.

    Why: the script runs on the master only, but Ray runs its env runners (and learners) on every
    host and imports the script's modules there (a custom env, an RLModule class). Ray adds the
    driver's script directory to every worker's ``sys.path``; the code dir is the same path on each
    host, so after this those imports work on worker hosts too.

    Args:
        environment: the job's contract; its failure file gets pip's error when the install fails.

    Raises:
        RequirementsError: ``requirements.txt`` would replace a package the image pins
            (`image_pins.check_source_dir`); pip did not run.
        sagemaker_training.errors.InstallModuleError, InstallRequirementsError: pip failed (after
            the failure file gives its error, `install_failure_reason`).
    """
    from sagemaker_training import entry_point, errors  # noqa: PLC0415  (the toolkit reads the job at import: docs/architecture.md)
    from sagemaker_training import environment as toolkit_environment  # noqa: PLC0415  (the toolkit reads the job at import: docs/architecture.md)

    env = toolkit_environment.Environment()
    fetch_source_dir()
    try:
        with output_tail(fd=1) as stdout:
            entry_point.install(env.user_entry_point, toolkit_environment.code_dir, capture_error=True)
    except (errors.InstallModuleError, errors.InstallRequirementsError) as exc:
        # capture_error=True: the exception holds pip's stderr.
        output = exc.output.decode("utf-8", "replace") if isinstance(exc.output, bytes) else str(exc.output or "")
        write_failure(environment, install_failure_reason(output, exc.return_code, exc.cmd, stdout=stdout()))
        raise


def script_arguments(hyperparameters: Mapping[str, Any]) -> list[str]:
    """The command-line arguments of the user script: the toolkit's ``--name value`` form
    (`sagemaker_training.mapping.to_cmd_args`) of every hyperparameter that is not the image's own.

    Args:
        hyperparameters: the toolkit's ``Environment.hyperparameters`` (decoded, ``sagemaker_*``
            already removed).

    Returns:
        e.g. ``["--episode-limit", "20", "--lr", "0.001"]`` for ``{"episode-limit": 20, "lr": 0.001,
        "ray.gcs_port": 6380}``.
    """
    from sagemaker_training import mapping  # noqa: PLC0415  (the toolkit reads the job at import: docs/architecture.md)

    return mapping.to_cmd_args({k: v for k, v in hyperparameters.items() if not is_image_hyperparameter(k)})


def run_user_entry_point(
    environment: Environment, *, ray_address: str | None = None, stop_budget_s: float = names.STOP_BUDGET_S
) -> None:
    """Run ``sagemaker_program`` with the training toolkit's `entry_point.run` (see the module
    docstring for what differs from the toolkit's own run).

    Args:
        environment: the job's contract; its failure file gets the script's error.
        ray_address: ``RAY_ADDRESS`` for the script (`LOCAL_RAY_ADDRESS` on one host, where the
            image starts no Ray); None keeps this process's (the job's cluster on several hosts).
        stop_budget_s: seconds the script gets after SIGTERM before it is killed (`ForwardSigterm`).

    Raises:
        RequirementsError: the source dir's ``requirements.txt`` would replace a package the image
            pins (`image_pins.check_source_dir`); pip did not run, nor the script.
        sagemaker_training.errors.ExecuteUserScriptError: the script exited with a non-zero code
            (after the failure file names its error); the toolkit reports it and exits 1.
        sagemaker_training.errors.InstallModuleError, InstallRequirementsError: pip could not
            install the source dir (``setup.py``) or its ``requirements.txt`` (after the failure file
            gives pip's error, `install_failure_reason`); the script did not run.
    """
    from sagemaker_training import entry_point, errors  # noqa: PLC0415  (the toolkit reads the job at import: docs/architecture.md)
    from sagemaker_training import environment as toolkit_environment  # noqa: PLC0415  (the toolkit reads the job at import: docs/architecture.md)

    env = toolkit_environment.Environment()
    fetch_source_dir()
    # The toolkit runs the script with this process's environment.
    if ray_address is not None:
        os.environ["RAY_ADDRESS"] = ray_address
    shorten_tune_placement_check(os.environ)
    # Tune's storage and the image's Tune callbacks (`user_checkpoints`): the script's Tune runs
    # leave a checkpoint in the checkpoint dir, which the image exports when the script saves none.
    os.environ.update(script_environment(environment))
    if len(env.hosts) == 1:
        # The toolkit first waits, silently and for up to 15 minutes, until every host name of
        # resourceconfig.json resolves; one host has nobody to wait for, and a hand-written job dir
        # for `docker run` may name a host (algo-1) that never resolves in the container. Its switch
        # for that wait (`entry_point.run`) is this variable.
        os.environ.setdefault(names.TOOLKIT_SKIP_DNS_WAIT_ENV, "true")
    watch = UnplaceableTuneRun(env.user_entry_point)
    # stdout too: pip explains a resolution conflict there ("The conflict is caused by: ...").
    with output_tail(watch=watch) as tail, output_tail(fd=1) as stdout, ForwardSigterm(stop_budget_s):
        try:
            entry_point.run(
                env.module_dir, env.user_entry_point, script_arguments(env.hyperparameters), env.to_env_vars()
            )
        except (errors.InstallModuleError, errors.InstallRequirementsError) as exc:
            failed, installing = exc, True
        except errors.ExecuteUserScriptError as exc:
            failed, installing = exc, False
        else:
            return
    if installing:
        reason = install_failure_reason(tail(), failed.return_code, failed.cmd, stdout=stdout())
    else:
        reason = watch.reason or failure_reason(tail(), failed.return_code, env.user_entry_point)
    write_failure(environment, reason)
    raise failed


def failure_reason(stderr: str, exit_code: int | None, entry_point: str, limit: int = FAILURE_REASON_LIMIT) -> str:
    """The failure file's text for a user script that exited with `exit_code`, within `limit`
    characters: its exception (type and message) first, then the last lines of its traceback.

    Args:
        stderr: the end of the job's stderr while the script ran (see `script_output.output_tail`).
        exit_code: the script's exit status (negative: killed by that signal; 137: SIGKILL).
        entry_point: the script's name, e.g. ``train.py``.
        limit: characters SageMaker shows as ``FailureReason``.

    Returns:
        e.g. ``ModuleNotFoundError: No module named 'gym' (entry point train.py, exit code 1);
        traceback, last lines: File "/opt/ml/code/train.py", line 3, in <module> | import gym``.
        Without a Python traceback (an ``argparse`` usage error, ``sys.exit("...")``): the script's
        last stderr lines.
    """
    lines = [_ANSI.sub("", line).rstrip() for line in _script_output(stderr).splitlines()]
    lines = [line for line in lines if line.strip() and not _TOOLKIT_LOG.match(line) and not _CARETS.match(line)]
    status = f"exit code {exit_code}"
    if exit_code in (137, -9):
        status += ", killed by SIGKILL: out of memory?"
    where = f"entry point {entry_point}, {status}"
    heads = [i for i, line in enumerate(lines) if line.strip() == _TRACEBACK_HEAD]
    if not heads:
        last = [line for line in lines if not _INFO_LOG.match(line)][-3:]
        if not last:
            return _fit(f"The {where} failed and wrote nothing to stderr; the job log holds its output.", limit)
        return _fit(f"The {where} failed: " + " | ".join(line.strip() for line in last), limit)
    block = lines[heads[-1] + 1 :]
    at = next((i for i, line in enumerate(block) if not line[:1].isspace() and _EXCEPTION_LINE.match(line)), None)
    if at is None:
        frames, exception = block, "an exception"
    else:
        frames = block[:at]
        exception = " | ".join(line.strip() for line in block[at : at + 6])
    head = f"{_cut(exception, limit // 2)} ({where})"
    hints = [hint for text, hint in HINTS.items() if text in exception]
    if hints:
        head += "; to fix: " + "; ".join(hints)
    frames_text = [line.strip() for line in frames]
    budget = limit - len(head) - len("; traceback, last lines: ")
    shown: list[str] = []
    for line in reversed(frames_text):
        if sum(len(s) + 3 for s in shown) + len(line) > budget:
            break
        shown.insert(0, line)
    if not shown:
        return _fit(head, limit)
    return _fit(f"{head}; traceback, last lines: " + " | ".join(shown), limit)


#: Where pip (on stdout) explains a resolution conflict, and where its generic advice that follows
#: begins (no room for it in the failure reason).
_PIP_CONFLICT = "The conflict is caused by:"
_PIP_ADVICE = "To fix this you could try to:"


def install_failure_reason(
    stderr: str, exit_code: Any, command: Any, stdout: str = "", limit: int = FAILURE_REASON_LIMIT
) -> str:
    """The failure file's text when pip could not install the user's source dir, within `limit`
    characters: the command, its exit code, pip's ``ERROR:`` lines (stderr), the conflict pip
    explains on stdout (``The conflict is caused by: ...``, without its generic advice), and what to
    change when a requirement conflicts with a package the image pins (pip names those
    ``The user requested (constraint) name==version``).

    The toolkit's own failure text for this case is ``InstallModuleError: ExitCode 1 ErrorMessage ""``
    (its ``capture_error`` is off in `entry_point.run`); pip's lines are in the job log, and SageMaker
    shows only the failure file.

    Args:
        stderr: the end of the job's stderr while pip ran (see `script_output.output_tail`), or pip's captured output.
        exit_code: pip's exit status.
        command: the toolkit's pip command (a list of arguments or a string).
        stdout: the end of the job's stdout while pip ran (`script_output.output_tail` with ``fd=1``).
        limit: characters SageMaker shows as ``FailureReason``.

    Returns:
        e.g. ``pip could not install the source dir (python3 -m pip install . -r requirements.txt, exit
        code 1): ERROR: Cannot install user-pkg==0.1 because these package versions have conflicting
        dependencies. | ERROR: ResolutionImpossible: ... | The conflict is caused by: | user-pkg 0.1
        depends on ray==2.9.3 | The user requested (constraint) ray==2.60.0; to fix: ...``.
    """

    def clean(text: str) -> list[str]:
        lines = [_ANSI.sub("", line).strip() for line in text.splitlines()]
        return [line for line in lines if line and not _TOOLKIT_LOG.match(line)]

    err = clean(stderr)
    first = next((i for i, line in enumerate(err) if line.startswith("ERROR:")), None)
    kept = err[first:] if first is not None else err[-3:]
    out = clean(stdout)
    at = max((i for i, line in enumerate(out) if line.startswith(_PIP_CONFLICT)), default=None)
    if at is not None:
        end = next((i for i in range(at, len(out)) if out[i].startswith(_PIP_ADVICE)), len(out))
        kept += out[at:end]
    shown = " ".join(command) if isinstance(command, list | tuple) else str(command)
    head = f"pip could not install the source dir ({shown}, exit code {exit_code})"
    fix = ""
    if any("(constraint)" in line for line in kept):
        fix = (
            "; to fix: the image pins the packages named '(constraint)' above"
            f" ({CONSTRAINTS_FILE}, pip's PIP_CONSTRAINT): remove or relax the conflicting requirement"
            " in setup.py or requirements.txt"
        )
    body = " | ".join(kept) if kept else "pip wrote nothing to stderr; the job log holds its output"
    room = limit - len(head) - len(fix) - 2
    return _fit(f"{head}: {_cut(' '.join(body.split()), max(room, 0))}{fix}", limit)


def _script_output(stderr: str) -> str:
    """What follows the toolkit's log of the command (the script's own stderr), else everything."""
    at = stderr.rfind(_INVOCATION_MARKER)
    if at < 0:
        return stderr
    rest = stderr[at + len(_INVOCATION_MARKER) :].lstrip("\n")
    return rest.split("\n", 1)[1] if "\n" in rest else ""


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fit(text: str, limit: int) -> str:
    return _cut(" ".join(text.split()), limit)
