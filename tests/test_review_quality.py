"""The review-quality bench (bench/review_quality.py): its scorer against hand-computed
values, and a whole run over the generated fixtures with the built-in reviewer and with
a scripted stand-in model behind the OpenAI stand-in (the gateway from source, real git).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.fake_openai import FakeOpenAI

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import review_quality  # noqa: E402
from make_quality_fixtures import generate  # noqa: E402

DIFF = re.compile(r"<<<BEGIN UNTRUSTED DIFF (\w+)>>>\n(.*?)\n<<<END UNTRUSTED DIFF \1>>>", re.S)
# The stand-in's "knowledge": a pattern in an added line, and the finding it makes. Some
# are wrong on purpose (any `open(` is a leak to it), so precision is not 1 by design.
HUNCHES = [
    (r"eval\(|shell=True|system\(|execute\(f\"|\" \+ (id|name)|exec\('|printf\(user", "injection"),
    (r"<= ?(len\(|arr\.length|n;)|len\(\w+\) \+ 1", "off-by-one"),
    (r"open\(|malloc\(|new FileInputStream|http\.Get\(", "resource-leak"),
    (r"except Exception:|catch \(\w+ \w+\) \{$|\.catch\(\(\) => \{\}\)|, _ :=", "error-handling"),
    (r"strcpy\(|gets\(|== \"|map\(parseInt\)", "api-misuse"),
]


def stand_in(body: dict[str, Any]) -> str:
    """A scripted model: a finding on each added line that matches a hunch; as the
    verifier it keeps every finding."""
    user = body["messages"][1]["content"]
    if body["response_format"]["json_schema"]["name"] == "finding_verdicts":
        listed = json.loads(re.search(r"FINDINGS \w+>>>\n(.*)\n<<<END", user, re.S).group(1))
        keep = [{"id": f["id"], "keep": True, "reason": "-"} for f in listed]
        return json.dumps({"verdicts": keep})
    findings, path = [], ""
    for line in DIFF.search(user).group(2).splitlines():
        if line.startswith("+++ b/"):
            path = line[6:]
        elif m := re.match(r"^\s*(\d+) \+(.*)$", line):
            for pattern, kind in HUNCHES:
                if re.search(pattern, m.group(2)):
                    findings.append({"path": path, "line": int(m.group(1)), "severity": "high",
                                     "rule": kind, "message": f"looks like {kind}"})  # fmt: skip
                    break
    return json.dumps({"findings": findings, "summary": "-"})


def test_the_scorer_against_hand_computed_values() -> None:
    labels = [
        {"name": "a", "clean": False, "defects": [
            {"path": "a.py", "start": 10, "end": 11, "kind": "injection"},
            {"path": "a.py", "start": 20, "end": 20, "kind": "race"}]},
        {"name": "b", "clean": False, "defects": [
            {"path": "b.go", "start": 5, "end": 5, "kind": "secret"}]},
        {"name": "c", "clean": True, "defects": []},
        {"name": "d", "clean": True, "defects": []},
    ]  # fmt: skip

    def f(path: str, line: int) -> dict[str, Any]:
        return {"path": path, "line": line, "severity": "high", "rule": "x", "message": "m"}

    found = {
        "a": [f("a.py", 10), f("a.py", 12), f("a.py", 30), f("b.go", 5)],  # 2 right (12: slack)
        "b": [f("b.go", 4), f("b.go", 5)],  # both right, one defect
        "c": [f("c.py", 1)],
        "d": [],
    }
    numbers = review_quality.score(labels, found)
    # right: a.py:10, a.py:12, b.go:4, b.go:5 = 4 of 7; detected: a 10-11 and b 5 = 2 of 3
    assert numbers["precision"] == 4 / 7
    assert numbers["recall"] == 2 / 3
    assert numbers["findings_per_clean_pr"] == 1 / 2
    assert (numbers["right"], numbers["findings"], numbers["detected"]) == (4, 7, 2)
    assert review_quality.score(labels, {})["precision"] is None  # no findings: no ratio


def test_the_bench_runs_the_builtin_reviewer_and_a_stand_in_model(tmp_path: Path) -> None:
    earlier = tmp_path / "earlier.json"
    earlier.write_text(json.dumps({"builtin": {"precision": 0.5, "recall": 0.1}}))
    out = tmp_path / "results.json"
    with FakeOpenAI() as api:
        api.model(stand_in)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LLM_", "AR_"))}
        env.update(LLM_BASE_URL=api.base_url, LLM_REASONING_MODEL="stand-in")
        proc = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "review_quality.py"), "--out", str(out),
             "--compare", str(earlier)],
            env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert api.problems == []
    assert proc.returncode == 0, proc.stderr
    results = json.loads(out.read_text())
    builtin, model = results["builtin"], results["builtin+llm:stand-in"]
    assert "40 cases, 30 planted defects, 10 clean" in proc.stdout
    for numbers in (builtin, model):
        assert numbers["errors"] == 0 and len(numbers["cases"]) == 40
    # the built-in reviewer finds the four planted secrets and nothing else
    assert (builtin["detected"], builtin["right"], builtin["findings"]) == (4, 4, 4)
    assert builtin["tokens_per_review"] == 0
    # the numbers are computed from the labels (the fixtures are deterministic)
    labels = generate(tmp_path / "again")
    for numbers in (builtin, model):
        again = review_quality.score(labels, numbers["cases"])
        assert (again["precision"], again["recall"]) == (numbers["precision"], numbers["recall"])
    assert model["recall"] > builtin["recall"] and 0 < model["precision"] < 1
    assert model["findings_per_clean_pr"] > 0  # `with open(...)` in a clean case
    assert model["tokens_per_review"] > 0
    assert sum(len(v) for v in model["cases"].values()) == model["findings"]
    assert "builtin: precision 0.500 -> 1.000 (+0.500); recall 0.100 -> 0.133" in proc.stdout
    assert "| builtin+llm:stand-in |" in proc.stdout
