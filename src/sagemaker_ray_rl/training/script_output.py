"""The job's output while a user entry point runs: copied on line by line, its end kept.

`output_tail` puts a pipe in place of this process's stdout or stderr (file descriptor 1 or 2) for
as long as a ``with`` block runs, so the script the toolkit starts, and every process the script
starts (Ray's driver, its log monitor), write into it. A reader thread copies what arrives to
where the descriptor pointed before (the container's stdout or stderr, which SageMaker sends to
CloudWatch), keeps the end of it for the failure file (`user_script.failure_reason`), and shows
each piece to a watcher (`graceful_stop.UnplaceableTuneRun`).

The copy is written in whole lines: a Python process with ``PYTHONUNBUFFERED=1`` (the image sets
it, so a job's log is never lost in a buffer) writes ``print("a", 1)`` as four system calls, and a
thread of the same process (Ray's log monitor, a logging handler) may write a line between them.
Where stdout and stderr end in the same pipe (``docker run`` without ``-t``, a CI runner, SageMaker
local mode's ``docker compose``), that line landed inside the script's line. Each copier now holds
a line until its end arrives (or `PARTIAL_LINE_WAIT_S` passes, for progress bars that rewrite one
line) and writes at most ``select.PIPE_BUF`` bytes of whole lines at a time, which POSIX makes
atomic against the other copier's writes to the same pipe. No library does this: the training
toolkit reads the script's output in 64 KiB chunks and strips each (which is why the script runs
with its own descriptors), and `subprocess` offers nothing between "inherit" and "pipe it to me".
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import threading
from collections.abc import Callable, Iterator

#: Bytes of the script's output kept for the failure reason (the end of it).
STDERR_TAIL_BYTES = 64 * 1024
#: Seconds a line without its end is held before it is written as it is (a progress bar's ``\r``).
PARTIAL_LINE_WAIT_S = 0.5
#: Seconds to wait, once the script has exited, for the rest of its output to be read.
_DRAIN_TIMEOUT_S = 2.0
#: Bytes read from the pipe at a time.
_READ_BYTES = 65536


def _write_all(fd: int, data: bytes) -> None:
    """Write all of `data` to `fd` (a write to a pipe may take part of it); errors are dropped (the
    reader of the job's log went away: the job goes on)."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except OSError:
            return


def _write_lines(fd: int, data: bytes) -> None:
    """Write `data` (whole lines) to `fd` in writes of at most ``select.PIPE_BUF`` bytes, each ending
    at a line end where one fits (a longer line goes in one write of its own)."""
    while data:
        if len(data) <= select.PIPE_BUF:
            cut = len(data)
        else:
            cut = max(data.rfind(b"\n", 0, select.PIPE_BUF), data.rfind(b"\r", 0, select.PIPE_BUF)) + 1
            if not cut:
                ends = [i for i in (data.find(b"\n"), data.find(b"\r")) if i >= 0]
                cut = min(ends) + 1 if ends else len(data)
        _write_all(fd, data[:cut])
        data = data[cut:]


class _LineCopier:
    """Copies bytes read from `source` to `target` in whole lines (see the module docstring), keeping
    the last `limit` bytes and showing each piece read, decoded, to `watch`."""

    def __init__(
        self, source: int, target: int, limit: int, watch: Callable[[str], None] | None, partial_wait_s: float
    ) -> None:
        self.source = source
        self.target = target
        self.limit = limit
        self.watch = watch
        self.partial_wait_s = partial_wait_s
        self.kept = bytearray()
        self.lock = threading.Lock()

    def run(self) -> None:
        """Copy until every writer has closed the pipe, then write what is left of a line."""
        pending = b""
        while True:
            if pending and not select.select([self.source], [], [], self.partial_wait_s)[0]:
                _write_all(self.target, pending)
                pending = b""
                continue
            try:
                data = os.read(self.source, _READ_BYTES)
            except OSError:
                data = b""
            if not data:
                _write_all(self.target, pending)
                return
            pending += data
            end = max(pending.rfind(b"\n"), pending.rfind(b"\r")) + 1
            if end:
                _write_lines(self.target, pending[:end])
                pending = pending[end:]
            if len(pending) >= _READ_BYTES:  # one very long line: no point holding it
                _write_all(self.target, pending)
                pending = b""
            with self.lock:
                self.kept.extend(data)
                del self.kept[: -self.limit]
            self._show(data)

    def _show(self, data: bytes) -> None:
        if self.watch is None:
            return
        try:
            self.watch(data.decode("utf-8", "replace"))
        except Exception as exc:  # a watcher must never stop the copy
            _write_all(self.target, f"output watcher failed: {exc!r}\n".encode())

    def text(self) -> str:
        with self.lock:
            return bytes(self.kept).decode("utf-8", "replace")


@contextlib.contextmanager
def output_tail(
    limit: int = STDERR_TAIL_BYTES,
    watch: Callable[[str], None] | None = None,
    fd: int = 2,
    partial_wait_s: float = PARTIAL_LINE_WAIT_S,
) -> Iterator[Callable[[], str]]:
    """Copy everything written to this process's file descriptor `fd` (2: its own stderr and that
    of the child processes it starts; 1 for stdout) to where it went before, in whole lines, keeping
    the last `limit` bytes, and show each piece read, decoded, to `watch` (called from a reader
    thread).

    The log holds what was written, byte for byte; only the moments its lines are written change
    (the toolkit's ``capture_error=True`` reads the script's stderr by chunks and strips each,
    which breaks indentation and lines in the job log, and keeps nothing when no Python exception
    name appears, e.g. an ``argparse`` usage error).

    Args:
        limit: bytes kept (the end of the output).
        watch: called with each piece read (any length, not split at line ends).
        fd: 1 or 2.
        partial_wait_s: seconds a line without its end is held before it is written as it is.

    Yields:
        A function returning the kept tail, decoded as UTF-8 (undecodable bytes replaced). It is
        complete once the block has exited.
    """
    stream = sys.stdout if fd == 1 else sys.stderr
    stream.flush()
    original = os.dup(fd)
    read_end, write_end = os.pipe()
    os.dup2(write_end, fd)
    os.close(write_end)
    copier = _LineCopier(read_end, original, limit, watch, partial_wait_s)
    thread = threading.Thread(target=copier.run, name=f"fd{fd}-tail", daemon=True)
    thread.start()
    try:
        yield copier.text
    finally:
        stream.flush()
        os.dup2(original, fd)
        # EOF comes once no process holds the pipe; a daemon the script started may keep it open,
        # and then the copy goes on after this returns.
        thread.join(_DRAIN_TIMEOUT_S)
