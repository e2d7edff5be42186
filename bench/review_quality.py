#!/usr/bin/env python3
"""How good the reviews are: precision, recall, findings per clean PR, latency and tokens
per review, over labelled pull requests (bench/fixtures/make_quality_fixtures.py: 40
small repositories in six languages, 30 with planted defects, 10 clean).

    python3 bench/review_quality.py [--app dist/auto-review] [--out results.json]
                                    [--compare OTHER.json] [--fixtures DIR]

Each case is reviewed by the real pipeline: ``auto-review review --path REPO --base main
--head topic --format json`` (the gateway from source, or the single file with
``--app``), no forge. Always with the built-in reviewer (no ``LLM_BASE_URL``), and, when
``LLM_BASE_URL`` is set, again with the model it names (``LLM_*`` and ``AR_*`` settings
as in the environment). A finding is right when it is in a labelled defect's file
within SLACK lines of its range; precision is right findings over all findings, recall
detected defects over all defects. ``--compare`` prints the difference from an earlier
``--out``: the way to see whether a model or a prompt change helps before switching.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench" / "fixtures"))

from make_quality_fixtures import generate  # noqa: E402

SLACK = 1  # lines either side of a defect's range where a finding still counts
METRICS = ("precision", "recall", "findings_per_clean_pr", "latency_median_s",
           "latency_p90_s", "tokens_per_review", "errors")  # fmt: skip


def matches(finding: dict[str, Any], defect: dict[str, Any]) -> bool:
    """Whether ``finding`` points at ``defect`` (same file, within SLACK lines)."""
    return (
        finding["path"] == defect["path"]
        and defect["start"] - SLACK <= finding["line"] <= defect["end"] + SLACK
    )


def score(labels: list[dict[str, Any]], found: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Precision, recall and findings per clean PR of ``found`` (case name -> findings)
    against ``labels`` (module doc). None where a ratio has no denominator."""
    right = total = detected = defects = clean_findings = clean = 0
    for case in labels:
        findings = found.get(case["name"], [])
        total += len(findings)
        right += sum(1 for f in findings if any(matches(f, d) for d in case["defects"]))
        defects += len(case["defects"])
        detected += sum(1 for d in case["defects"] if any(matches(f, d) for f in findings))
        if case["clean"]:
            clean += 1
            clean_findings += len(findings)
    return {
        "precision": right / total if total else None,
        "recall": detected / defects if defects else None,
        "findings_per_clean_pr": clean_findings / clean if clean else None,
        "findings": total,
        "right": right,
        "detected": detected,
        "defects": defects,
    }


def _command(app: Path | None) -> tuple[list[str], dict[str, str]]:
    if app is not None:
        return [sys.executable, str(app)], {}
    source = {"PYTHONPATH": str(ROOT / "payload" / "gateway")}
    return [sys.executable, "-m", "auto_review_gateway"], source


def review_all(
    labels: list[dict[str, Any]], fixtures: Path, env: dict[str, str], app: Path | None
) -> dict[str, Any]:
    """Review every case with ``env``; the findings, latencies, tokens and failures."""
    command, extra = _command(app)
    env = {**env, **extra}
    out: dict[str, Any] = {"cases": {}, "latency": [], "tokens": [], "failed": {}}
    for case in labels:
        started = time.monotonic()
        proc = subprocess.run(
            [*command, "review", "--path", str(fixtures / case["name"]), "--base", "main",
             "--head", "topic", "--format", "json"],
            env=env, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        out["latency"].append(time.monotonic() - started)
        if proc.returncode != 0:
            out["failed"][case["name"]] = (proc.stderr.strip().splitlines() or ["?"])[-1]
            continue
        result = json.loads(proc.stdout)
        out["reviewer"] = result["reviewer"]
        out["cases"][case["name"]] = result["findings"]
        usage = result.get("usage", {})
        out["tokens"].append(usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0))
    return out


def summary(labels: list[dict[str, Any]], run: dict[str, Any]) -> dict[str, Any]:
    """The run's numbers (METRICS, and the counts behind them)."""
    latency = sorted(run["latency"])
    numbers = score(labels, run["cases"])
    numbers.update(
        latency_median_s=statistics.median(latency) if latency else None,
        latency_p90_s=latency[int(0.9 * (len(latency) - 1))] if latency else None,
        tokens_per_review=statistics.mean(run["tokens"]) if run["tokens"] else 0,
        errors=len(run["failed"]),
        reviewer=run.get("reviewer", "?"),
        failed=run["failed"],
        cases=run["cases"],
    )
    return numbers


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def table(results: dict[str, dict[str, Any]]) -> str:
    """The numbers as a Markdown table, one row a reviewer."""
    rows = ["| reviewer | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
    for name, numbers in results.items():
        rows.append(f"| {name} | " + " | ".join(_cell(numbers[m]) for m in METRICS) + " |")
    return "\n".join(rows)


def compare(now: dict[str, dict[str, Any]], before: dict[str, dict[str, Any]]) -> str:
    """Per reviewer present in both, each metric as ``before -> now (+delta)``."""
    lines = []
    for name in now:
        if name not in before:
            lines.append(f"{name}: not in the earlier results")
            continue
        parts = []
        for metric in METRICS:
            a, b = before[name].get(metric), now[name].get(metric)
            if isinstance(a, (int, float)) and isinstance(b, (int, float)):
                parts.append(f"{metric} {_cell(a)} -> {_cell(b)} ({b - a:+.3f})")
            else:
                parts.append(f"{metric} {_cell(a)} -> {_cell(b)}")
        lines.append(f"{name}: " + "; ".join(parts))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--app", type=Path, help="the single file (default: the gateway from source)"
    )
    parser.add_argument("--out", type=Path, help="write the results here (JSON)")
    parser.add_argument("--compare", type=Path, metavar="OTHER.json", help="an earlier --out")
    parser.add_argument("--fixtures", type=Path, help="an existing fixture dir (default: generate)")
    args = parser.parse_args(argv)
    before = None
    if args.compare is not None:
        try:
            before = json.loads(args.compare.read_text())
        except (OSError, ValueError) as exc:
            print(f"review_quality: --compare {args.compare}: {exc}", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(prefix="ar-quality-") as tmp:
        fixtures = args.fixtures or Path(tmp)
        labels = (
            json.loads((fixtures / "labels.json").read_text())
            if args.fixtures
            else generate(fixtures)
        )
        base = {k: v for k, v in os.environ.items() if k != "LLM_BASE_URL"}
        runs = {"builtin": review_all(labels, fixtures, base, args.app)}
        if os.environ.get("LLM_BASE_URL"):
            runs["llm"] = review_all(labels, fixtures, dict(os.environ), args.app)
    results = {}
    for run in runs.values():
        numbers = summary(labels, run)
        results[numbers["reviewer"]] = numbers
    defects = sum(len(c["defects"]) for c in labels)
    print(
        f"{len(labels)} cases, {defects} planted defects, {sum(c['clean'] for c in labels)} clean"
    )
    print(table(results))
    for name, numbers in results.items():
        for case, why in numbers["failed"].items():
            print(f"{name}: {case} failed: {why}")
    if before is not None:
        print(compare(results, before))
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
