"""A job log a person can read: Ray's, Tune's and RLlib's known-harmless lines left out.

What stays: our lines, metric and progress lines, Tune's trial table, and every warning or error
that asks something of the user. What goes (`HARMLESS`): ``ray start``'s banner (how to connect,
``ray stop``, ``--block``), RLlib's notice that the new API stack is its default, its own internal
use of a deprecated ``RLModule(config=...)`` signature, Tune's hint to install ``gputil`` on hosts
without GPUs and its slow-``setup`` hint, and Ray core's note on env runners' constructor arguments;
the ONNX exporter's INFO lines (`QUIET_BELOW_WARNING`) and torch's warning about its own pytree use
(`HARMLESS_WARNINGS`). Each is matched by a fixed substring, logger or pattern, so a new message
never disappears by accident.

``SAGEMAKER_RAY_RL_LOG_LEVEL=debug`` (or the SDK's ``container_log_level=logging.DEBUG``, the
hyperparameter ``sagemaker_container_log_level`` <= 10) keeps everything.

Why our own filter: Ray has log levels per process (``RAY_LOGGING_CONFIG``), not per message, and
these lines come at WARNING from loggers that also carry warnings users need.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections import deque
from typing import IO

from sagemaker_ray_rl.contract.names import LOG_LEVEL_ENV

#: Substrings of lines that are left out of the job log.
HARMLESS: tuple[str, ...] = (
    "on the new API stack! This is the new default behavior",
    "`RLModule(config=[RLModuleConfig object])` has been deprecated",
    "Install gputil for GPU system monitoring",
    "If your trainable is slow to initialize, consider setting reuse_actors=True",
    # Ray core, for every RLlib env runner (RLlib restarts env runners from their config instead).
    "has constructor arguments in the object store and max_restarts > 0",
)
#: Loggers whose records below WARNING are left out: torch's ONNX exporter (``onnxscript``'s
#: optimizer and ``onnx_ir``'s passes) logs each rewrite pass at INFO while the job exports its graphs.
QUIET_BELOW_WARNING: tuple[str, ...] = ("onnxscript", "onnx_ir")
#: Python warnings left out (message regex, category): torch's pytree, while the ONNX exporter
#: unflattens its outputs, warns about its own use of ``LeafSpec``.
HARMLESS_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),
)
#: ``ray start``'s banner: its INFO and SUCC lines (``--log-style=record``); warnings and errors stay.
RAY_START_BANNER: tuple[str, ...] = (
    "INFO scripts.py:",
    "SUCC scripts.py:",
    "INFO cli_output_helpers.py:",
    "INFO usage_lib.py:",
    "INFO node.py:",  # draining on SIGTERM at the end of the job
)
#: Lines of ``ray start`` kept in memory for an error message when it fails.
TAIL_LINES = 40


def verbose(environ: dict[str, str] | None = None, hyperparameters: dict | None = None) -> bool:
    """Whether the user asked for every line: ``SAGEMAKER_RAY_RL_LOG_LEVEL=debug`` or the
    hyperparameter ``sagemaker_container_log_level`` <= 10 (`logging.DEBUG`)."""
    environ = os.environ if environ is None else environ
    if environ.get(LOG_LEVEL_ENV, "").strip().lower() == "debug":
        return True
    level = (hyperparameters or {}).get("sagemaker_container_log_level")
    return isinstance(level, int) and not isinstance(level, bool) and level <= logging.DEBUG


def is_harmless(line: str) -> bool:
    """Whether `line` is one of the known-harmless lines (`HARMLESS`)."""
    return any(text in line for text in HARMLESS)


class HarmlessFilter(logging.Filter):
    """A `logging.Filter` dropping records whose message is known-harmless."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a record whose arguments do not format: keep it, as logging would
            return True
        if record.levelno < logging.WARNING and record.name.split(".")[0] in QUIET_BELOW_WARNING:
            return False
        return not is_harmless(message)


def install(hyperparameters: dict | None = None) -> None:
    """Drop known-harmless records in this process: a `HarmlessFilter` on every handler of the root
    logger and of Ray's loggers. Idempotent.

    Filters must sit on handlers (a logger's own filters do not see its children's records), and
    RLlib adds a handler of its own to ``ray.rllib`` when it is imported (``propagate=False``), so
    Ray, RLlib and Tune are imported first.

    Lines of the job's actors (env runners, the Tune trial) reach this process through Ray's log
    forwarding; `filter_worker_logs` filters those. Does nothing when `verbose`.

    Args:
        hyperparameters: the job's decoded hyperparameters (for ``sagemaker_container_log_level``).
    """
    if verbose(hyperparameters=hyperparameters):
        return
    for message, category in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    import ray.rllib  # noqa: F401, PLC0415  (imported for the handler it adds; cluster/ imports no Ray)
    import ray.tune  # noqa: F401, PLC0415  (as ray.rllib)

    names = ["", *(name for name in logging.root.manager.loggerDict if name.split(".")[0] == "ray")]
    for name in names:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, HarmlessFilter) for f in handler.filters):
                handler.addFilter(HarmlessFilter())


def filter_worker_logs(hyperparameters: dict | None = None) -> bool:
    """Leave the known-harmless lines out of what the job's actors print, as this driver forwards it
    (``ray.init(log_to_driver=True)``). Call after ``ray.init``. Does nothing when `verbose`.

    Ray forwards actors' output to the driver through one handler of its standard-stream dispatcher
    (``ray._private.ray_logging.global_worker_stdstream_dispatcher``, handler ``ray_print_logs``,
    Ray 2.60); this wraps that handler so each batch's ``lines`` lose the harmless ones. Filtering
    here costs nothing in the actors (a ``worker_process_setup_hook`` would, since a job runtime env
    keeps Ray from reusing its prestarted workers). When Ray's internals differ, nothing is filtered.

    Returns:
        Whether the filter is in place.
    """
    if verbose(hyperparameters=hyperparameters):
        return False
    try:
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher  # noqa: PLC0415  (private: may be gone)

        with dispatcher._lock:
            dispatcher.handlers = [
                (
                    name,
                    handler
                    if name != "ray_print_logs" or isinstance(handler, _FilteredLines)
                    else _FilteredLines(handler),
                )
                for name, handler in dispatcher.handlers
            ]
            return any(isinstance(handler, _FilteredLines) for _, handler in dispatcher.handlers)
    except (ImportError, AttributeError, TypeError, ValueError):
        return False


class _FilteredLines:
    """A Ray log handler without the harmless lines of each batch (`filter_worker_logs`)."""

    def __init__(self, handler) -> None:
        self.handler = handler

    def __call__(self, data: dict) -> None:
        lines = [line for line in data.get("lines", []) if not is_harmless(line)]
        if lines or not data.get("lines"):
            self.handler({**data, "lines": lines})


class LineForwarder:
    """Copies a child process's output to `out` line by line, leaving out `ray start`'s banner and the
    known-harmless lines unless `verbose`, and keeps the last `TAIL_LINES` lines for error messages.

    Args:
        source: the child's stdout (text mode, stderr merged into it).
        out: where kept lines go (this process's stdout when None).
    """

    def __init__(self, source: IO[str], out: IO[str] | None = None) -> None:
        self.source = source
        self.out = out
        self.keep_all = verbose()
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)

    def run(self) -> None:
        """Forward until the child closes its output (run it in a daemon thread)."""
        out = self.out or sys.stdout
        for line in self.source:
            self.tail.append(line.rstrip("\n"))
            if not self.keep_all and (is_harmless(line) or any(text in line for text in RAY_START_BANNER)):
                continue
            out.write(line)
            out.flush()

    def last_lines(self) -> str:
        """The child's last lines (all of them, filtered or not), newline-separated."""
        return "\n".join(self.tail)
