"""What the LLM reviewer accepts: the model's answer validated against the schema
(unknown or missing keys, wrong types, unknown severities make it invalid), then turned
into findings on changed lines only, at or above the severity floor.

Only findings leave this module: the model's summary is validated and discarded.
"""

from __future__ import annotations

import json
import re
from typing import Any

from auto_review_gateway.core import httpjson
from auto_review_gateway.core.model import SEVERITIES, Finding, ReviewContext, severity_rank
from auto_review_gateway.review.llm.prompt import (
    ANSWER_KEYS,
    FINDING_KEYS,
    MAX_MESSAGE_CHARS,
    MAX_WALK_CHARS,
    OPTIONAL_KEYS,
    WALK_KEYS,
)

MAX_RULE_CHARS = 64
MAX_FINDINGS = 100  # a review with more inline comments than this is noise, not help

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_RULE_CHARS = re.compile(r"[^a-z0-9._/-]+")
# A leading <think>...</think> block, as some reasoning models emit before the answer.
_THINK = re.compile(r"\A\s*<think>.*?</think>", re.DOTALL)
_FENCE = re.compile(r"\A```(?:json)?[ \t]*\n(.*)\n```\Z", re.DOTALL)


class InvalidAnswer(ValueError):
    """The model's answer does not match the schema; the message says where."""


def _unwrap(text: str) -> str:
    """Strip a leading <think> block and one enclosing Markdown code fence, if present."""
    text = _THINK.sub("", text, count=1).strip()
    fenced = _FENCE.match(text)
    return fenced.group(1).strip() if fenced else text


def _show(value: Any) -> str:
    """A short one-line rendering of a value from the answer, for error messages."""
    return httpjson.clean_text(json.dumps(value, ensure_ascii=False), 60)


def _exact_keys(
    obj: dict[str, Any],
    allowed: frozenset[str] | set[str],
    where: str,
    optional: frozenset[str] = frozenset(),
) -> None:
    """InvalidAnswer unless `obj` has exactly the `allowed` keys (`optional` may be absent)."""
    unknown = sorted(set(obj) - allowed)
    missing = sorted(allowed - optional - set(obj))
    if unknown:
        raise InvalidAnswer(
            f"{where} has unknown key(s) {_show(unknown)} (allowed: {_show(sorted(allowed))})"
        )
    if missing:
        raise InvalidAnswer(f"{where} is missing key(s) {_show(missing)}")


def validate_answer(text: str) -> tuple[list[dict[str, Any]], str, dict[str, str]]:
    """Parse and check the model's answer; ``(findings as dicts, summary, walkthrough)``,
    the walkthrough as path -> one cleaned line (empty when the answer has none).

    Raises InvalidAnswer with a one-line reason naming the offending place
    (e.g. ``findings[2].severity``) when the answer is not exactly the schema.
    """
    try:
        doc = json.loads(_unwrap(text))
    except ValueError as exc:
        raise InvalidAnswer(f"not a JSON document ({exc})") from None
    if not isinstance(doc, dict):
        raise InvalidAnswer(f"expected a JSON object, got {type(doc).__name__}")
    _exact_keys(doc, ANSWER_KEYS, "the answer", OPTIONAL_KEYS)
    if not isinstance(doc["summary"], str):
        raise InvalidAnswer("summary must be a string")
    if not isinstance(doc["findings"], list):
        raise InvalidAnswer("findings must be an array")
    findings = []
    for i, item in enumerate(doc["findings"]):
        where = f"findings[{i}]"
        if not isinstance(item, dict):
            raise InvalidAnswer(f"{where} must be an object")
        _exact_keys(item, FINDING_KEYS, where)
        for key in ("path", "rule", "message", "severity"):
            if not isinstance(item[key], str):
                raise InvalidAnswer(f"{where}.{key} must be a string")
        # bool is an int in Python, but true is not a line number
        if not isinstance(item["line"], int) or isinstance(item["line"], bool):
            raise InvalidAnswer(f"{where}.line must be an integer")
        if item["line"] < 1:
            raise InvalidAnswer(f"{where}.line must be >= 1")
        if item["severity"] not in SEVERITIES:
            raise InvalidAnswer(
                f"{where}.severity {_show(item['severity'])} is not one of {', '.join(SEVERITIES)}"
            )
        if not item["path"].strip():
            raise InvalidAnswer(f"{where}.path is empty")
        findings.append(item)
    return findings, doc["summary"], _walkthrough(doc.get("walkthrough", []))


def _walkthrough(items: Any) -> dict[str, str]:
    """The answer's walkthrough checked: path -> one line, control characters removed."""
    if not isinstance(items, list):
        raise InvalidAnswer("walkthrough must be an array")
    out: dict[str, str] = {}
    for i, item in enumerate(items):
        where = f"walkthrough[{i}]"
        if not isinstance(item, dict):
            raise InvalidAnswer(f"{where} must be an object")
        _exact_keys(item, WALK_KEYS, where)
        if not isinstance(item["path"], str) or not isinstance(item["change"], str):
            raise InvalidAnswer(f"{where}.path and .change must be strings")
        line = httpjson.clean_text(item["change"], MAX_WALK_CHARS)
        if item["path"].strip() and line:
            out.setdefault(item["path"].strip().removeprefix("./"), line)
    return out


def _clean_message(text: str) -> str:
    """One line, no control characters, at most MAX_MESSAGE_CHARS."""
    return httpjson.clean_text(text, MAX_MESSAGE_CHARS) or "(no message)"


def _clean_rule(text: str) -> str:
    """A kebab-case identifier built from the model's rule name (``llm`` if nothing is left)."""
    rule = _RULE_CHARS.sub("-", _CONTROL.sub("", text).strip().lower()).strip("-")
    return rule[:MAX_RULE_CHARS] or "llm"


def to_findings(items: list[dict[str, Any]], context: ReviewContext, floor: str) -> list[Finding]:
    """Validated answer items -> Findings: only on changed lines of known files, at or
    above ``floor``, cleaned, deduplicated, most severe first, at most MAX_FINDINGS."""
    floor_rank = severity_rank(floor)
    out: list[Finding] = []
    seen: set[tuple[str, int, str, str]] = set()
    for item in items:
        path = item["path"].strip()
        if path.startswith("./"):
            path = path[2:]
        if item["line"] not in context.changed_lines(path):
            continue  # unchanged line or a path not in the diff: not ours to comment on
        if severity_rank(item["severity"]) < floor_rank:
            continue
        finding = Finding(
            path=path,
            line=item["line"],
            severity=item["severity"],
            rule=_clean_rule(item["rule"]),
            message=_clean_message(item["message"]),
        )
        key = (finding.path, finding.line, finding.rule, finding.message)
        if key not in seen:
            seen.add(key)
            out.append(finding)
    out.sort(key=lambda f: -severity_rank(f.severity))  # stable: keeps answer order
    return out[:MAX_FINDINGS]
