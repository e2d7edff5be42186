"""The built-in reviewer: deterministic, offline checks of added lines and added files.

Only what the change adds is judged: a problem already in the base is not this
change's finding. Messages never quote a secret, only name its kind.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
from collections.abc import Iterator

from auto_review_gateway.core.model import FileChange, Finding, ReviewContext

LARGE_FILE_BYTES = 1024 * 1024
MAX_PER_RULE_PER_FILE = 20  # then one finding says how many more

SEVERITY = {
    "private-key": "critical",
    "conflict-marker": "high",
    "secret-token": "high",
    "large-file": "medium",
    "debugger": "medium",
    "env-file": "medium",
    "binary-file": "low",
    "trailing-whitespace": "low",
    "no-final-newline": "low",
    "space-before-tab": "low",
}

_CONFLICT_EDGE = re.compile(r"^(<{7}|>{7}|\|{7})(?: |$)")
_CONFLICT_MIDDLE = "======="
_PRIVATE_KEY = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")
_TOKENS = (
    ("an AWS access key id", re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA)[0-9A-Z]{16}(?![A-Z0-9])")),
    ("a GitHub token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_\w{22,})")),
    ("a Slack token", re.compile(r"\bxox[baprs]-[A-Za-z0-9-]{10,}")),
    ("a Stripe live secret key", re.compile(r"\b[sr]k_live_[A-Za-z0-9]{20,}")),
    ("a Google API key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}")),
    (
        "a hard-coded API or secret key",
        re.compile(r"(?i)(?:api|secret)_?key['\"]?\s*[:=]\s*['\"][A-Za-z0-9/+_-]{20,}"),
    ),
)
_JS = {".js", ".jsx", ".mjs", ".cjs", ".ts", ".tsx", ".vue", ".svelte"}
_DEBUGGERS = {
    ".py": re.compile(r"\b(?:breakpoint\(\)|i?pdb\.set_trace\(|import i?pdb\b)"),
    ".rb": re.compile(r"\b(?:binding\.(?:pry|irb)|byebug)\b"),
    **{ext: re.compile(r"^\s*debugger\s*;?\s*$") for ext in _JS},
}
_COMMENT = ("#", "//")
_ENV_TEMPLATES = {"example", "sample", "template", "dist", "defaults"}


def _line_rules(path: str, line: str, in_conflict_file: bool) -> Iterator[tuple[str, str]]:
    """(rule, message) for every problem of one added line (without its '+' or a final CR)."""
    if _CONFLICT_EDGE.match(line) or (in_conflict_file and line == _CONFLICT_MIDDLE):
        yield "conflict-marker", "merge conflict marker left in the file"
    if _PRIVATE_KEY.search(line):
        yield "private-key", "a private key is committed: remove it and revoke the key"
    else:
        for kind, pattern in _TOKENS:
            if pattern.search(line):
                yield "secret-token", f"looks like {kind}: remove it and rotate it"
                break
    if line != line.rstrip(" \t") and not _markdown_break(path, line):
        yield "trailing-whitespace", "trailing whitespace"
    indent = line[: len(line) - len(line.lstrip(" \t"))]
    if " \t" in indent:
        yield "space-before-tab", "a space before a tab in the indentation"
    debugger = _DEBUGGERS.get(posixpath.splitext(path)[1].lower())
    if debugger and not line.lstrip().startswith(_COMMENT) and debugger.search(line):
        yield "debugger", "a debugger statement left in the code"


def _markdown_break(path: str, line: str) -> bool:
    # In Markdown exactly two trailing spaces after text are a hard line break.
    return (
        path.lower().endswith((".md", ".markdown"))
        and line.endswith("  ")
        and not line.endswith("   ")
        and bool(line.strip())
    )


def _is_env_file(path: str) -> bool:
    name = posixpath.basename(path)
    if name == ".env":
        return True
    return name.startswith(".env.") and name[5:].lower() not in _ENV_TEMPLATES


def _file_findings(change: FileChange, large_file_bytes: int) -> list[Finding]:
    found: list[Finding] = []

    def add(line: int, rule: str, message: str) -> None:
        found.append(Finding(change.path, line, SEVERITY[rule], rule, message))

    if change.status == "added":
        if change.size > large_file_bytes:
            size_mib = change.size / (1024 * 1024)
            limit_mib = large_file_bytes / (1024 * 1024)
            add(1, "large-file", f"added file of {size_mib:.1f} MiB (limit {limit_mib:g} MiB)")
        if change.binary:
            add(1, "binary-file", "binary file added")
        if _is_env_file(change.path):
            add(1, "env-file", "an environment file is committed: it usually holds secrets")
    lines = {n: text[:-1] if text.endswith("\r") else text for n, text in change.added.items()}
    in_conflict = any(_CONFLICT_EDGE.match(text) for text in lines.values())
    for number in sorted(lines):
        for rule, message in _line_rules(change.path, lines[number], in_conflict):
            add(number, rule, message)
    if change.no_newline_at_end and lines:
        add(max(lines), "no-final-newline", "no newline at the end of the file")
    return found


def _limit(findings: list[Finding]) -> list[Finding]:
    """At most MAX_PER_RULE_PER_FILE findings per rule; the last one counts the rest."""
    by_rule: dict[str, list[Finding]] = {}
    for finding in findings:
        by_rule.setdefault(finding.rule, []).append(finding)
    out: list[Finding] = []
    for group in by_rule.values():
        rest = len(group) - MAX_PER_RULE_PER_FILE
        if rest > 0:
            last = group[MAX_PER_RULE_PER_FILE - 1]
            note = f"{last.message} (and {rest} more line(s) like this in this file)"
            group = [*group[: MAX_PER_RULE_PER_FILE - 1], dataclasses.replace(last, message=note)]
        out.extend(group)
    return out


def review(context: ReviewContext, large_file_bytes: int = LARGE_FILE_BYTES) -> list[Finding]:
    """Findings of every built-in rule, sorted by path, line and rule."""
    findings: list[Finding] = []
    for change in context.files:
        if change.status != "deleted":
            findings.extend(_limit(_file_findings(change, large_file_bytes)))
    return sorted(findings, key=lambda f: (f.path, f.line, f.rule))
