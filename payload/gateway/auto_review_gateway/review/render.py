"""Render a Review as text, JSON or Markdown.

Paths, rule names and messages come from the repository (or a model that read it):
text shows them through :func:`escape.visible` (no control character reaches the
terminal, a file name cannot start a line of its own) and quotes a path that could be
read as more than a path (``"a.py:1: critical: x"``:1: ...), Markdown as code spans or
escaped prose (nothing renders as a link, an image or a table row), and JSON as they
are (json.dumps escapes what JSON must).
"""

from __future__ import annotations

import json

from auto_review_gateway.core.escape import md_code, md_text, visible
from auto_review_gateway.core.model import Review

FORMATS = ("text", "json", "markdown")


def as_dict(review: Review) -> dict[str, object]:
    """The review as JSON-ready data, keys in a fixed order; ``too_large`` (after
    ``skipped``) only when a file was too large to review."""
    data: dict[str, object] = {
        "summary": review.summary,
        "verdict": review.verdict,
        "reviewer": review.reviewer,
        "base": review.base,
        "head": review.head,
        "files_reviewed": review.files_reviewed,
        "truncated": review.truncated,
        "skipped": list(review.skipped),
    }
    if review.too_large:
        data["too_large"] = [{"path": path, "size": size} for path, size in review.too_large]
    if review.not_reviewed:
        data["not_reviewed"] = list(review.not_reviewed)
    if review.dropped:
        data["dropped"] = [
            {"path": f.path, "line": f.line, "severity": f.severity, "rule": f.rule,
             "message": f.message, "reason": reason}
            for f, reason in review.dropped
        ]  # fmt: skip
    if review.usage:
        data["usage"] = dict(review.usage)
    data["findings"] = [
        {"path": f.path, "line": f.line, "severity": f.severity, "rule": f.rule,
         "message": f.message}
        for f in review.findings
    ]  # fmt: skip
    return data


def size_text(size: int) -> str:
    """``size`` bytes for a reader: "200.0 MiB", "12.5 KiB", "300 bytes"."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


def _path(path: str) -> str:
    """``path`` for a ``path:line:`` line: as it is, or quoted as git quotes names (``"``,
    backslash escapes) when it holds what could end it early (``:``, ``,``, ``"``),
    an escape, or spaces at an end."""
    shown = visible(path)
    if shown == path and not any(c in path for c in ':,"') and path == path.strip():
        return path
    return '"' + shown.replace('"', '\\"') + '"'


def _text(review: Review) -> str:
    out = [
        f"auto-review {review.summary}",
        f"base {review.base[:12]}  head {review.head[:12]}  reviewer {visible(review.reviewer)}",
    ]
    if review.skipped:
        out.append(f"skipped (ignored_paths): {', '.join(_path(p) for p in review.skipped)}")
    if review.too_large:
        big = ", ".join(f"{_path(p)} ({size_text(n)})" for p, n in review.too_large)
        out.append(f"too large to review: {big}")
    if review.not_reviewed:
        shown = ", ".join(_path(p) for p in review.not_reviewed)
        out.append(f"not reviewed by the model (call cap or deadline): {shown}")
    if review.dropped:
        out.append(f"dropped by the verifier: {len(review.dropped)} finding(s)")
    out += [
        f"{_path(f.path)}:{f.line}: {f.severity}: {visible(f.message)} [{visible(f.rule)}]"
        for f in review.findings
    ]
    return "\n".join(out)


def _markdown(review: Review) -> str:
    out = [
        f"**auto-review: {review.summary}**",  # ours: counts and a verdict
        "",
        f"Reviewed `{review.head[:12]}` against `{review.base[:12]}` by "
        f"{md_code(review.reviewer)}.",
    ]
    if review.truncated:
        out.append("The diff was larger than the review's byte cap: later files were not read.")
    if review.skipped:
        out.append(f"Skipped by `ignored_paths`: {', '.join(md_code(p) for p in review.skipped)}.")
    if review.too_large:
        big = ", ".join(f"{md_code(p)} ({size_text(n)})" for p, n in review.too_large)
        out.append(f"Too large to review (listed, not read): {big}.")
    out += _markdown_left(review)
    if review.findings:
        out += ["", "| Severity | File | Line | Rule | Message |", "|---|---|---:|---|---|"]
        out += [
            f"| {f.severity} | {md_code(f.path, in_table=True)} | {f.line} | "
            f"{md_text(f.rule)} | {md_text(f.message)} |"
            for f in review.findings
        ]
    return "\n".join(out)


def _markdown_left(review: Review) -> list[str]:
    """What the model left out (not reviewed) or its verifier dropped, Markdown."""
    out = []
    if review.not_reviewed:
        shown = ", ".join(md_code(p) for p in review.not_reviewed)
        out.append(f"Not reviewed by the model (call cap or deadline reached): {shown}.")
    if review.dropped:
        out += ["", f"<details><summary>{len(review.dropped)} finding(s) dropped by the "
                "verifier</summary>", ""]  # fmt: skip
        out += [
            f"- {md_code(f.path)}:{f.line} {f.severity} {md_text(f.rule)}: "
            f"{md_text(f.message)} — dropped: {md_text(reason)}"
            for f, reason in review.dropped
        ]
        out += ["", "</details>"]
    return out


def render(review: Review, fmt: str) -> str:
    """``review`` in format ``fmt`` (one of FORMATS), without a final newline."""
    if fmt == "json":
        return json.dumps(as_dict(review), indent=2)
    if fmt == "markdown":
        return _markdown(review)
    if fmt == "text":
        return _text(review)
    raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")


def render_disabled(base: str, head: str, fmt: str) -> str:
    """The output of a review that ``enabled: false`` in .auto_review.yaml switched off."""
    summary = "review disabled by .auto_review.yaml"
    if fmt == "json":
        data = as_dict(Review(base=base, head=head, reviewer="none", findings=[], files_reviewed=0))
        data.update(summary=summary, verdict="disabled")
        return json.dumps(data, indent=2)
    if fmt == "markdown":
        return f"**auto-review: {summary}**"
    return f"auto-review {summary}"
