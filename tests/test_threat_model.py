"""docs/THREAT-MODEL.md stays true to the suite: every test it names exists (a top-level
`def test_...` in that file), every threat has an ID in order and either tests or the
word Open, and it has its assets and trust boundaries."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from conftest import ROOT

DOC = ROOT / "docs" / "THREAT-MODEL.md"
NAMED = re.compile(r"`(tests/test_[a-z0-9_]+\.py)::(test_[a-z0-9_]+)`")


def defined_tests(path: Path) -> set[str]:
    """The names of the top-level test functions of one test file."""
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in tree.body
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.name.startswith("test_")
    }


def missing(text: str) -> list[str]:
    """The ``file::name`` references of ``text`` that name no existing test."""
    gone = []
    for file, name in NAMED.findall(text):
        path = ROOT / file
        if not path.is_file() or name not in defined_tests(path):
            gone.append(f"{file}::{name}")
    return gone


def threats(text: str) -> list[tuple[int, str]]:
    """(number, section text) of each ``### Tn`` section."""
    parts = re.split(r"^### T(\d+) ", text, flags=re.M)[1:]
    return [(int(parts[i]), parts[i + 1]) for i in range(0, len(parts), 2)]


def test_every_test_the_threat_model_names_exists() -> None:
    text = DOC.read_text()
    assert len(NAMED.findall(text)) >= 50
    assert missing(text) == []


def test_a_renamed_or_invented_test_is_caught() -> None:
    """Control: the check above sees a name that is not there."""
    text = (
        "- `tests/test_server.py::test_bad_or_missing_signature_is_401_and_nothing_is_queued`\n"
        "- `tests/test_server.py::test_bad_or_missing_signature_is_ignored`\n"
        "- `tests/test_nowhere.py::test_anything`\n"
    )
    assert missing(text) == [
        "tests/test_server.py::test_bad_or_missing_signature_is_ignored",
        "tests/test_nowhere.py::test_anything",
    ]


def test_threats_are_numbered_in_order_and_each_is_tested_or_open() -> None:
    text = DOC.read_text()
    found = threats(text)
    assert [n for n, _ in found] == list(range(1, len(found) + 1))
    for number, section in found:
        tested = bool(NAMED.search(section))
        assert tested or "**Open**" in section.splitlines()[0], f"T{number}"
        assert tested or "No test shows this holds" in section, f"T{number}"
        assert "Mitigation" in section, f"T{number}"
    for heading in ("## Assets", "## Trust boundaries", "## Threats"):
        assert heading in text
    for asset in ("token", "key", "host", "queue", "cache"):
        assert asset in text.split("## Trust boundaries")[0].lower(), asset
