"""docs/architecture.md matches the tree: every folder and module of the package is described, and
its layer table is the one import-linter enforces."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
PACKAGE = REPO / "src" / "sagemaker_ray_rl"
DOC = (REPO / "docs" / "architecture.md").read_text()


def test_every_package_folder_and_top_level_module_is_described():
    folders = [p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()]
    modules = [p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    missing = [f"{f}/" for f in folders if f"**`{f}/`**" not in DOC] + [m for m in modules if f"`{m}`" not in DOC]
    assert not missing, f"docs/architecture.md does not describe {missing}"


def test_every_module_of_a_folder_is_named_in_its_paragraph():
    for folder in (p for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()):
        paragraph = DOC.split(f"**`{folder.name}/`**", 1)[1].split("\n\n", 1)[0]
        names = [p.stem for p in folder.glob("*.py") if p.name != "__init__.py"]
        missing = [n for n in names if not re.search(rf"`{n}[`.(/]", paragraph)]
        assert not missing, f"the {folder.name}/ paragraph does not name {missing}"


def test_layer_table_is_the_enforced_one():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    contract = next(c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers")
    table = DOC.split("## Layers", 1)[1].split("```text", 1)[1].split("```", 1)[0]
    documented = [line.split("  ", 1)[0].strip() for line in table.strip().splitlines()]
    assert documented == contract["layers"]
