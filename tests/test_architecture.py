"""The rooms hold: import-linter's contracts (pyproject.toml, ``tool.importlinter``) are
kept by the tree and broken by an upward import or a circle; no module grows past 300
lines without saying why; every package says its job, and docs/ARCHITECTURE.md names it.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GATEWAY_SRC = ROOT / "payload" / "gateway"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
# The code we ship or build with: what the 300-line rule and the package rules cover.
SOURCE_TREES = ("launcher", "buildsys", "bench", "payload/gateway")
MAX_LINES = 300
REASON = "Over 300 lines: "


def lint_imports(tree: Path, *contracts: str) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` with the project's contracts (all, or those named) over the packages
    under ``tree`` (``launcher/``, ``buildsys/``, ``payload/gateway/auto_review_gateway/``)."""
    env = dict(os.environ, PYTHONPATH=f"{tree / 'payload' / 'gateway'}{os.pathsep}{tree}")
    only = [arg for contract in contracts for arg in ("--contract", contract)]
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(ROOT / "pyproject.toml"), "--no-cache", *only],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def contract_names() -> dict[str, str]:
    """Each contract's id -> its name, as pyproject.toml declares them."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {c["id"]: c["name"] for c in config["contracts"]}


def test_the_tree_keeps_every_import_contract() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    count = len(contract_names())
    assert count >= 8
    assert f"Contracts: {count} kept, 0 broken." in result.stdout


@pytest.fixture(scope="module")
def tree_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The three packages copied, to be broken one import at a time."""
    base = tmp_path_factory.mktemp("tree")
    for part in ("launcher", "buildsys", "payload/gateway/auto_review_gateway"):
        shutil.copytree(ROOT / part, base / part, ignore=shutil.ignore_patterns("__pycache__"))
    return base


# (module file, the import added to it, the contract that must break)
UPWARD_IMPORTS = [
    # the shared models importing the HTTP side: upward across the gateway's stages
    ("payload/gateway/auto_review_gateway/core/model.py",
     "from auto_review_gateway.web import server", "gateway-stages"),
    # the review importing a forge: siblings that must stay independent
    ("payload/gateway/auto_review_gateway/review/context.py",
     "from auto_review_gateway.forges import client", "gateway-stages"),
    # the queue importing a forge's job: upward inside the jobs stage
    ("payload/gateway/auto_review_gateway/jobs/queue.py",
     "from auto_review_gateway.jobs import github_job", "gateway-jobs"),
    # diff parsing importing the module that imports it: a circle
    ("payload/gateway/auto_review_gateway/review/diffparse.py",
     "from auto_review_gateway.review import context", "no-circles"),
    # the gateway reaching for the launcher's code
    ("payload/gateway/auto_review_gateway/core/names.py",
     "import launcher.errors", "sides"),
    # the launcher reaching for build code
    ("launcher/errors.py", "import buildsys.recipe", "launcher-no-build"),
    # the cache reaching up into the sandbox that uses it
    ("launcher/cache/paths.py", "from launcher.sandbox import run", "launcher-stages"),
    # a circle in the build (the one Stage's own module broke)
    ("buildsys/stagedir.py", "from buildsys import stdlib", "no-circles"),
]  # fmt: skip


@pytest.mark.parametrize(("module", "statement", "contract"), UPWARD_IMPORTS)
def test_an_upward_import_or_a_circle_breaks_a_contract(
    tree_copy: Path, module: str, statement: str, contract: str
) -> None:
    path = tree_copy / module
    original = path.read_text()
    path.write_text(original + f"\n{statement}  # added by the test\n")
    try:
        result = lint_imports(tree_copy, contract)
    finally:
        path.write_text(original)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Contracts: 0 kept, 1 broken." in result.stdout
    assert "added by the test" not in result.stderr  # broken, not unparsable
    assert lint_imports(tree_copy, contract).returncode == 0  # the clean copy keeps it


def python_files() -> list[Path]:
    files = [ROOT / "build.py"]
    for tree in SOURCE_TREES:
        files += sorted((ROOT / tree).rglob("*.py"))
    return [f for f in files if "__pycache__" not in f.parts]


def test_no_module_over_300_lines_without_a_reason() -> None:
    """~300 lines a module; a longer one says why in a docstring line ``Over 300 lines:``."""
    unexplained = []
    for path in python_files():
        lines = path.read_text().count("\n")
        if lines <= MAX_LINES:
            continue
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        reasons = [line for line in doc.splitlines() if line.startswith(REASON)]
        if not reasons or len(reasons[0]) <= len(REASON) + 10:
            unexplained.append(f"{path.relative_to(ROOT)} ({lines} lines)")
    assert not unexplained, unexplained


def packages() -> list[Path]:
    """Every package directory of the launcher, the build and the gateway."""
    found = []
    for tree in ("launcher", "buildsys", "payload/gateway/auto_review_gateway"):
        found += [p.parent for p in (ROOT / tree).rglob("__init__.py")]
    return sorted(set(found))


def test_every_package_says_its_job_and_imports_nothing_itself() -> None:
    """A package's ``__init__.py`` is its docstring: one job, what it may import. It runs no
    import of its own, so entering a room costs the warm path nothing."""
    for package in packages():
        tree = ast.parse((package / "__init__.py").read_text())
        assert ast.get_docstring(tree), f"{package.relative_to(ROOT)} has no docstring"
        imports = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        assert not imports, f"{package.relative_to(ROOT)}/__init__.py imports"


def test_the_architecture_page_names_every_package() -> None:
    page = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    missing = []
    for package in packages():
        rel = package.relative_to(ROOT)
        shown = rel.relative_to("payload/gateway") if rel.parts[0] == "payload" else rel
        if f"{shown.as_posix()}/" not in page:
            missing.append(shown.as_posix())
    assert not missing, missing
    assert "docs/ARCHITECTURE.md" in (ROOT / "README.md").read_text()
