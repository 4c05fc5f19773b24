"""README.md and docs/*.md stay true where they name the code: the README stays short and links
every topic page, links between the pages resolve (anchors included), every module, path,
hyperparameter and environment variable they name exists, and every hyperparameter and environment
variable the image reads is documented.

Names are read from the sources with `ast` (nothing is imported: no Ray, no torch), so the tests are
fast and see the same constants the code uses.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SRC = REPO / "src"
PACKAGE = SRC / "sagemaker_ray_rl"
README = REPO / "README.md"
DOCS = REPO / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]

README_START = """# sagemaker-ray-rl

```bash
scripts/demo.sh    # build the image, train PPO on CartPole-v1 in it, serve the policy, play 10 episodes over HTTP
scripts/test.sh    # set up a venv and run the unit, integration and container tests
```
"""


def page_id(path: Path) -> str:
    return str(path.relative_to(REPO))


def without_code_blocks(text: str) -> str:
    """`text` without its fenced code blocks (kept as empty lines, so line counts stay)."""
    return re.sub(r"^```.*?^```", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S | re.M)


def prose(text: str) -> str:
    """`text` without code blocks and inline code: what markdown renders as links and headings."""
    return re.sub(r"`[^`\n]*`", "", without_code_blocks(text))


def inline_code(text: str) -> list[str]:
    """Every inline code span of `text` outside fenced code blocks."""
    return re.findall(r"`([^`\n]+)`", without_code_blocks(text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (``-`` and ``_`` kept),
    spaces to ``-``."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    seen: dict[str, int] = {}
    found = set()
    for line in without_code_blocks(path.read_text()).splitlines():
        match = re.match(r"#{1,6} (.*)", line)
        if not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return frozenset(found)


def links(path: Path) -> list[str]:
    return re.findall(r"\]\(([^)\s]+)\)", prose(path.read_text()))


# --- the README ---------------------------------------------------------------------------------


def test_the_readme_starts_with_the_two_commands_of_a_fresh_machine():
    assert README.read_text().startswith(README_START)


def test_the_readme_is_under_300_lines():
    lines = README.read_text().count("\n")
    assert lines < 300, f"README.md has {lines} lines; move the detail to a page under docs/"


def test_the_readme_table_links_every_topic_page():
    table = README.read_text().split("\n## Documentation\n", 1)[1].split("\n## ", 1)[0]
    linked = {target for target in re.findall(r"\]\((docs/[^)#]+\.md)\)", table)}
    pages = {page_id(p) for p in DOCS.glob("*.md")}
    assert not pages - linked, f"the README's documentation table does not link {sorted(pages - linked)}"
    assert not linked - pages, f"the README's documentation table links missing pages {sorted(linked - pages)}"


# --- links and paths ----------------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_link_between_the_pages_resolves(page):
    broken = []
    for target in links(page):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        resolved = (page.parent / file).resolve() if file else page
        if not resolved.exists():
            broken.append(f"{target} (no file {resolved.relative_to(REPO) if REPO in resolved.parents else resolved})")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target} (no heading #{anchor} in {page_id(resolved)})")
    assert not broken, f"{page_id(page)}: broken links {broken}"


#: A path of the repository as the pages name it: under one of these folders, or the package's own.
PATH = re.compile(
    r"(?<![\w./~$-])((?:src|scripts|examples|tests|docker|docs|\.ci)/[\w./-]*[\w/]|sagemaker_ray_rl/[\w./-]*\w)"
)


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_path_the_pages_name_exists(page):
    missing = []
    for name in sorted(set(PATH.findall(page.read_text()))):
        path = REPO / "src" / name if name.startswith("sagemaker_ray_rl/") else REPO / name
        if not path.exists():
            missing.append(name)
    assert not missing, f"{page_id(page)} names paths that do not exist: {missing}"


@cache
def top_level_names(module: Path) -> frozenset[str]:
    """Names a module defines or imports at its top level (its attributes)."""
    names = set()
    for node in ast.parse(module.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return frozenset(names)


def resolves(dotted: str) -> bool:
    """Whether ``sagemaker_ray_rl.a.b[.attr][:attr]`` names a module of the package (and, after it,
    a top-level name of that module)."""
    dotted, _, entry = dotted.partition(":")
    parts = dotted.split(".")
    path = SRC
    for i, part in enumerate(parts):
        if (path / part / "__init__.py").exists():
            path = path / part
            continue
        if (path / f"{part}.py").exists():
            module = path / f"{part}.py"
            rest = parts[i + 1 :] + ([entry] if entry else [])
            break
        module = path / "__init__.py"
        rest = parts[i:] + ([entry] if entry else [])
        break
    else:
        module, rest = path / "__init__.py", [entry] if entry else []
    names = top_level_names(module)
    if module == PACKAGE / "__init__.py":  # the lazily imported public API
        lazy = next(
            n for n in ast.parse(module.read_text()).body if isinstance(n, ast.Assign) and n.targets[0].id == "_LAZY"
        )
        names = names | set(ast.literal_eval(lazy.value))
    return not rest or rest[0] in names


MODULE = re.compile(r"(?<![\w.])sagemaker_ray_rl(?:\.\w+)+(?::\w+)?")


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_module_the_pages_name_exists(page):
    missing = sorted({m for m in MODULE.findall(page.read_text()) if not resolves(m)})
    assert not missing, f"{page_id(page)} names modules or attributes that do not exist: {missing}"


def test_no_page_points_at_a_shared_folder():
    pointing = [page_id(p) for p in PAGES if re.search(r"(?<![\w-])shared/", p.read_text())]
    assert not pointing, f"the docs must stand alone; {pointing} point at a shared/ folder"


# --- hyperparameters ----------------------------------------------------------------------------


@cache
def module_constants(path: Path) -> dict[str, object]:
    """Top-level ``NAME = <literal>`` of a module, with names of other constants resolved, and
    ``MappingProxyType({...})`` read as its dict."""
    constants: dict[str, object] = {}

    def value(node: ast.AST) -> object:
        if isinstance(node, ast.Name):
            return constants[node.id]
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "MappingProxyType":
            return value(node.args[0])
        if isinstance(node, (ast.Tuple, ast.List)):
            return tuple(value(e) for e in node.elts)
        if isinstance(node, ast.Dict):  # the keys of a table whose values are not literals
            return {value(k): None for k in node.keys}
        return ast.literal_eval(node)

    for node in ast.parse(path.read_text()).body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if isinstance(target, ast.Name) and getattr(node, "value", None) is not None:
            try:
                constants[target.id] = value(node.value)
            except (KeyError, ValueError, TypeError):
                pass
    return constants


def function(path: Path, name: str) -> ast.FunctionDef:
    return next(n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.FunctionDef) and n.name == name)


def training_hyperparameters() -> list[str]:
    """Every key and key family the built-in experiment accepts (`training.hyperparameters`,
    `training.legacy`), and the families it leaves to the image (`contract.names`)."""
    hp_path = PACKAGE / "training" / "hyperparameters.py"
    hp = module_constants(hp_path)
    accepted = next(n for n in ast.walk(function(hp_path, "accepted_keys_text")) if isinstance(n, ast.List))
    keys: list[str] = []
    for element in accepted.elts:  # [ALGORITHM, ENV, ..., *STOP_CRITERIA]
        if isinstance(element, ast.Starred):
            keys.extend(hp[element.value.id])
        else:
            keys.append(hp[element.id])
    keys += [hp["RLLIB_CONFIG_PREFIX"], *hp["STOP_PREFIXES"], *hp["BUILDER_SECTIONS"]]
    legacy_path = PACKAGE / "training" / "legacy.py"
    legacy = module_constants(legacy_path)
    keys += [*legacy["TRANSLATIONS"], *legacy["STOP_TRANSLATIONS"]]
    is_legacy = function(legacy_path, "is_legacy").body[1:]  # after its docstring
    keys += [n.value for stmt in is_legacy for n in ast.walk(stmt) if isinstance(n, ast.Constant)]
    names = module_constants(PACKAGE / "contract" / "names.py")
    keys += [*names["IMAGE_HYPERPARAMETER_PREFIXES"], names["TUNING_OBJECTIVE_METRIC_HYPERPARAMETER"]]
    return keys


def cluster_hyperparameters() -> list[str]:
    return list(module_constants(PACKAGE / "cluster" / "settings.py")["KEYS"])


def offline_hyperparameters() -> list[str]:
    """``mode`` and ``offline.<field>`` for each field of `OfflineSettings` that `_defaults` keeps."""
    path = PACKAGE / "offline" / "settings.py"
    tree = ast.parse(path.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "OfflineSettings")
    fields = [n.target.id for n in cls.body if isinstance(n, ast.AnnAssign)]
    skip_node = next(
        n for n in ast.walk(function(path, "_defaults")) if isinstance(n, ast.Assign) and n.targets[0].id == "skip"
    )
    skip = ast.literal_eval(skip_node.value)
    prefix = module_constants(PACKAGE / "contract" / "names.py")["OFFLINE_HYPERPARAMETER_PREFIX"]
    return ["mode", *(prefix + f for f in fields if f not in skip)]


def documented(key: str, spans: list[str]) -> bool:
    """`key` is an inline code span of the page; a family (``stop.``, ``model.``, ``_``) is the start of one."""
    if key.endswith((".", "_")):
        return any(span.startswith(key) for span in spans)
    return key in spans


@pytest.mark.parametrize(
    ("page", "keys"),
    [
        ("docs/training.md", training_hyperparameters),
        ("docs/multi-host.md", cluster_hyperparameters),
        ("docs/offline-rl.md", offline_hyperparameters),
    ],
    ids=["built-in experiment", "ray.*", "mode and offline.*"],
)
def test_every_hyperparameter_the_image_accepts_is_documented(page, keys):
    accepted = keys()
    assert len(accepted) > 5, "the hyperparameters were not found in the sources: update this test"
    spans = inline_code((REPO / page).read_text())
    missing = [key for key in accepted if not documented(key, spans)]
    assert not missing, f"{page} does not document the hyperparameters {missing}"


# --- environment variables ----------------------------------------------------------------------

#: A variable of the SageMaker contract or of the image (ours: SAGEMAKER_RAY_RL_*, SAGEMAKER_RAY_SERVE_*).
CONTRACT_VARIABLE = re.compile(r"(?:SAGEMAKER|SM)_[A-Z0-9_]+")


def variables_the_code_reads() -> dict[str, str]:
    """Variable -> the module naming it: every ``*_ENV`` constant of the package (a name or a tuple
    of names; ``*_PREFIX`` ones are families such as ``SM_CHANNEL_``) and every string of the
    package that is a SageMaker or image variable's name."""
    found: dict[str, str] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name) and "_ENV" in node.targets[0].id:
                values = node.value.elts if isinstance(node.value, (ast.Tuple, ast.List)) else [node.value]
                for v in values:
                    if isinstance(v, ast.Constant) and isinstance(v.value, str):
                        found.setdefault(v.value, page_id(path))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and CONTRACT_VARIABLE.fullmatch(node.value)
            ):
                found.setdefault(node.value, page_id(path))
    return found


def test_every_environment_variable_the_image_reads_is_documented():
    variables = variables_the_code_reads()
    assert "SAGEMAKER_RAY_RL_SERVER" in variables and "RAY_AUTH_TOKEN" in variables, "update this test"
    text = "\n".join(p.read_text() for p in PAGES)
    missing = {
        name: module
        for name, module in variables.items()
        if not re.search(rf"(?<![A-Z0-9_]){re.escape(name)}" + ("" if name.endswith("_") else "(?![A-Z0-9_])"), text)
    }
    assert not missing, f"README.md and docs/ do not document the variables {missing}"


def test_every_image_variable_the_pages_name_exists():
    """The image's own variables (``SAGEMAKER_RAY_RL_*``, ``SAGEMAKER_RAY_SERVE_*``) named in the
    pages are read somewhere: the package, the scripts, the tests or the image's files."""
    code = "\n".join(
        p.read_text()
        for folder in ("src", "scripts", "tests", "docker")
        for p in (REPO / folder).rglob("*")
        if p.is_file() and p.suffix in (".py", ".sh", "") and p.stat().st_size < 1_000_000
    )
    named = set()
    for page in PAGES:
        named.update(re.findall(r"SAGEMAKER_RAY_(?:RL|SERVE)_[A-Z0-9_]*[A-Z0-9]", page.read_text()))
    unknown = sorted(n for n in named if not re.search(rf"{n}(?![A-Z0-9_])", code))
    assert not unknown, f"the docs name variables nothing reads: {unknown}"


# --- the serve command --------------------------------------------------------------------------


def serve_options() -> set[str]:
    main = function(PACKAGE / "serving" / "server.py", "main")
    options = set()
    for call in ast.walk(main):
        if isinstance(call, ast.Call) and getattr(call.func, "attr", "") == "add_argument":
            options.update(a.value for a in call.args if isinstance(a, ast.Constant))
    return options


def test_every_serve_option_the_pages_name_exists():
    options = serve_options()
    assert "--server" in options, "update this test"
    named = set()
    for page in PAGES:
        named.update(re.findall(r"\bserve (--[\w-]+)", page.read_text()))
    # docs/serving.md is about serve alone: every option it names (`--backend`, the old name) is serve's
    named.update(span.split()[0] for span in inline_code((DOCS / "serving.md").read_text()) if span.startswith("--"))
    assert named <= options, f"the docs name serve options it does not have: {sorted(named - options)}"


# --- benchmarks ---------------------------------------------------------------------------------


def test_benchmarks_open_with_the_current_figures_and_keep_the_runs_below():
    text = (DOCS / "benchmarks.md").read_text()
    sections = re.findall(r"^## (.+)$", without_code_blocks(text), re.M)
    assert sections[:3] == ["Current figures", "Test suite time", "Runs"], sections[:3]
    table = text.split("\n## Current figures\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| ---")]
    header, rows = rows[0], rows[1:]
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "measure",
        "current figure",
        "anchor",
        "date",
        "command",
    ]
    assert len(rows) >= 10
    for row in rows:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", row.strip().strip("|"))]
        assert len(cells) == 5 and all(cells), f"a row of the current figures lacks a cell: {row}"
        assert re.fullmatch(r"\d{4}-\d\d-\d\d", cells[3]), f"date {cells[3]!r} of {cells[0]!r} is not YYYY-MM-DD"
    runs = text.split("\n## Runs\n", 1)[1]
    dated = re.findall(r"^#{3,} .*\(\d{4}-\d\d-\d\d", without_code_blocks(runs), re.M)
    assert len(dated) >= 20, "the dated runs belong under ## Runs"
