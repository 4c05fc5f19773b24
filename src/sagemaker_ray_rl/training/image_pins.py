"""The image's pinned packages, and a user's ``requirements.txt`` checked against them before pip runs.

A user entry point's source dir may hold a ``requirements.txt``, which the training toolkit installs
with ``pip install -r requirements.txt`` before the script runs (`sagemaker_training.modules.install_requirements`;
``pip install . -r requirements.txt`` for a source dir with ``setup.py``). Unchecked, a line such as
``ray==2.9.3`` (from a notebook written for an older image) makes pip replace the image's Ray,
torch or Gymnasium, and the job fails much later with an error that does not name the cause. Two
guards keep the image's packages in place:

- the image ships `CONSTRAINTS_FILE`, every pin of its lock (``docker/requirements-<variant>.txt``)
  without hashes, written at build time by `constraints_from_lock` (``python -m
  sagemaker_ray_rl.training.image_pins LOCK OUT``), and its ``ENV`` sets ``PIP_CONSTRAINT`` to it:
  the toolkit runs pip with the container's environment (`sagemaker_training.process.check_error`),
  so no pip run in the image can install another version of a pinned package;
- before pip runs, `check_source_dir` reads the source dir's ``requirements.txt`` (and the files its
  ``-r`` lines name) and fails at once, naming each line that asks for a version the image does not
  have, the image's version and what to do (`RequirementsError`), instead of pip's resolution error
  minutes later.

Packages the image does not ship, and lines the image's versions satisfy (``ray>=2.40``, ``numpy``),
install as they would anywhere. pip, setuptools and wheel are not constrained (`UNCONSTRAINED`):
they are build tools, and a source dir's ``setup.py`` may need newer ones.

Source of the file format: pip's "Requirements File Format" and "Constraints Files" documentation.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from sagemaker_ray_rl.contract.errors import RequirementsError

#: Where the image keeps its constraints file (``PIP_CONSTRAINT`` in the Dockerfile's runtime stage).
CONSTRAINTS_FILE = Path("/opt/sagemaker-ray-rl/constraints.txt")
#: The requirements file of a source dir, as the toolkit names it (`sagemaker_training.modules.has_requirements`).
REQUIREMENTS_TXT = "requirements.txt"
#: Packages of the lock left out of the constraints file (build tools, not the job's runtime).
UNCONSTRAINED = frozenset({"pip", "setuptools", "wheel"})

#: A ``# comment``: at the start of a line or after whitespace (pip's ``COMMENT_RE``).
_COMMENT = re.compile(r"(^|\s+)#.*$")
#: Per-requirement options after the requirement (``--hash=...``, ``--config-settings ...``).
_LINE_OPTIONS = re.compile(r"\s+--?[A-Za-z].*$")
#: ``-r FILE`` / ``--requirement FILE`` / ``--requirement=FILE``.
_INCLUDE = re.compile(r"^(-r|--requirement)(\s*=\s*|\s+|(?=\S))(?P<path>\S+)$")
#: A line pip reads as a path or URL, not a requirement (``./pkg``, ``https://...``, ``git+https://...``, ``x.whl``).
_PATH_OR_URL = re.compile(r"^(\.|/|~|[A-Za-z][\w+.-]*://)|\.(whl|zip|tar\.gz|tgz|tar\.bz2)$")


@dataclass(frozen=True)
class PinConflict:
    """One requirement line that asks for a version of a package the image pins to another one.

    Attributes:
        file: the requirements file's name as the user knows it (``requirements.txt``).
        line: its 1-based line number (the first line of a continued one).
        requirement: the requirement as written (``ray==2.9.3``).
        package: the package's canonical name (``ray``).
        image_version: the image's version (``2.60.0``).
    """

    file: str
    line: int
    requirement: str
    package: str
    image_version: str

    def describe(self) -> str:
        """One sentence for the failure file: the line, the image's version and what to do."""
        return (
            f"{self.file} line {self.line}: {self.requirement!r} asks for a {self.package} version the image does "
            f"not have (the image has {self.package}=={self.image_version}); remove the pin or relax it to one "
            f"{self.image_version} meets (e.g. just {self.package}), or use an image that ships the {self.package} "
            "version you need"
        )


def constraints_from_lock(lock_text: str) -> str:
    """A pip constraints file from a hash-checked lock file: one ``name==version`` line per pin, sorted,
    without hashes, extras or environment markers, and without `UNCONSTRAINED` packages.

    Args:
        lock_text: a pip-compile style lock (``name==version \\`` then ``--hash=...`` lines; comments).

    Returns:
        e.g. ``"gymnasium==1.2.2\\nray==2.60.0\\ntorch==2.13.0+cpu\\n"``.

    Raises:
        ValueError: a lock line is not ``name==version`` (the lock must pin everything exactly).
    """
    pins: dict[str, str] = {}
    for number, text in _logical_lines(lock_text):
        if text.startswith("-"):
            continue
        try:
            requirement = Requirement(_LINE_OPTIONS.sub("", text))
        except InvalidRequirement as exc:
            raise ValueError(f"lock line {number}: {text!r} is not a requirement: {exc}") from exc
        specs = list(requirement.specifier)
        if len(specs) != 1 or specs[0].operator != "==":
            raise ValueError(f"lock line {number}: {text!r} is not an exact pin (name==version)")
        name = canonicalize_name(requirement.name)
        if name not in UNCONSTRAINED:
            pins[name] = specs[0].version
    return "".join(f"{name}=={version}\n" for name, version in sorted(pins.items()))


def read_pins(path: Path = CONSTRAINTS_FILE) -> dict[str, str]:
    """The image's pins from its constraints file: canonical package name -> version.

    Returns:
        e.g. ``{"ray": "2.60.0", "torch": "2.13.0+cpu", ...}``; empty when `path` does not exist
        (outside the image nothing is pinned).
    """
    if not path.is_file():
        return {}
    pins = {}
    for _, text in _logical_lines(path.read_text()):
        name, sep, version = text.partition("==")
        if sep:
            pins[canonicalize_name(name.strip())] = version.strip()
    return pins


def find_conflicts(requirements: Path, pins: Mapping[str, str], *, shown_as: str | None = None) -> list[PinConflict]:
    """The lines of a requirements file (and of the files its ``-r`` lines include) whose version
    specifiers the image's pinned version does not satisfy.

    Lines that are options (``-i``, ``--extra-index-url``, ``-c``, ``-e``, ``--pre``), paths or URLs,
    ``name @ URL`` requirements, lines whose environment marker is false here and lines pip itself
    would refuse are skipped: pip reports those itself, and ``PIP_CONSTRAINT`` still holds for them.
    Pre-releases count as satisfying (``ray>=2.60.0rc1``).

    Args:
        requirements: the file to read.
        pins: canonical package name -> the image's version (`read_pins`).
        shown_as: the file's name in messages (default: its name).

    Returns:
        The conflicts in file order (empty: pip may run).

    Raises:
        RequirementsError: the file, or one it includes, cannot be read.
    """
    return _find(requirements, pins, shown_as or requirements.name, set())


def _find(path: Path, pins: Mapping[str, str], shown_as: str, seen: set[Path]) -> list[PinConflict]:
    resolved = path.resolve()
    if resolved in seen:
        return []
    seen.add(resolved)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise RequirementsError(f"cannot read {shown_as} of the source dir: {exc}") from exc
    conflicts: list[PinConflict] = []
    for number, line in _logical_lines(text):
        include = _INCLUDE.match(line)
        if include:
            child = path.parent / include["path"]
            conflicts += _find(child, pins, include["path"], seen)
            continue
        if line.startswith("-") or _PATH_OR_URL.search(line):
            continue
        written = _LINE_OPTIONS.sub("", line)
        try:
            requirement = Requirement(written)
        except InvalidRequirement:
            continue
        if requirement.url or (requirement.marker is not None and not requirement.marker.evaluate()):
            continue
        name = canonicalize_name(requirement.name)
        if name not in pins or not requirement.specifier:
            continue
        try:
            have = Version(pins[name])
        except InvalidVersion:
            continue
        if not requirement.specifier.contains(have, prereleases=True):
            conflicts.append(PinConflict(shown_as, number, written, name, pins[name]))
    return conflicts


def check_source_dir(code_dir: Path, pins: Mapping[str, str] | None = None) -> None:
    """Fail before pip runs when the source dir's ``requirements.txt`` asks for versions of the
    image's packages that the image does not have; nothing to do without one.

    Args:
        code_dir: the user's source dir, extracted (the toolkit's ``environment.code_dir``).
        pins: the image's pins; `read_pins` of `CONSTRAINTS_FILE` when None.

    Raises:
        RequirementsError: one or more conflicts, all named (also printed to stderr).
    """
    requirements = code_dir / REQUIREMENTS_TXT
    if not requirements.is_file():
        return
    pins = read_pins() if pins is None else pins
    if not pins:
        return
    conflicts = find_conflicts(requirements, pins)
    if not conflicts:
        return
    message = (
        f"the source dir's {REQUIREMENTS_TXT} would replace packages this image pins, so nothing was installed: "
        + "; ".join(conflict.describe() for conflict in conflicts)
        + f". The image's pins are in {CONSTRAINTS_FILE} (pip's PIP_CONSTRAINT)."
    )
    print(f"[sagemaker-ray-rl] {message}", file=sys.stderr, flush=True)
    raise RequirementsError(message)


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """``(first line number, text)`` of each non-empty line, continuations (``\\``) joined and
    comments removed, as pip reads a requirements file."""
    lines: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        if not pending:
            start = number
        if raw.endswith("\\") and not _COMMENT.search(raw[:-1]):
            pending.append(raw[:-1])
            continue
        pending.append(raw)
        joined = _COMMENT.sub("", " ".join(pending)).strip()
        pending = []
        if joined:
            lines.append((start, joined))
    if pending:
        joined = _COMMENT.sub("", " ".join(pending)).strip()
        if joined:
            lines.append((start, joined))
    return lines


def main(argv: list[str] | None = None) -> None:
    """``python -m sagemaker_ray_rl.training.image_pins LOCK OUT``: write the constraints file `OUT`
    from the lock file `LOCK` (`constraints_from_lock`); used by the Dockerfile."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        raise SystemExit("usage: python -m sagemaker_ray_rl.training.image_pins LOCK_FILE CONSTRAINTS_FILE")
    lock, out = Path(args[0]), Path(args[1])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(constraints_from_lock(lock.read_text()))


if __name__ == "__main__":
    main()
