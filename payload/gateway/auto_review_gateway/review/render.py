"""Render a Review as text, JSON or Markdown."""

from __future__ import annotations

import json

from auto_review_gateway.core.model import Review

FORMATS = ("text", "json", "markdown")


def as_dict(review: Review) -> dict[str, object]:
    """The review as JSON-ready data, keys in a fixed order."""
    return {
        "summary": review.summary,
        "verdict": review.verdict,
        "reviewer": review.reviewer,
        "base": review.base,
        "head": review.head,
        "files_reviewed": review.files_reviewed,
        "truncated": review.truncated,
        "skipped": list(review.skipped),
        "findings": [
            {
                "path": f.path,
                "line": f.line,
                "severity": f.severity,
                "rule": f.rule,
                "message": f.message,
            }
            for f in review.findings
        ],
    }


def _text(review: Review) -> str:
    out = [
        f"auto-review {review.summary}",
        f"base {review.base[:12]}  head {review.head[:12]}  reviewer {review.reviewer}",
    ]
    if review.skipped:
        out.append(f"skipped (ignored_paths): {', '.join(review.skipped)}")
    out += [f"{f.path}:{f.line}: {f.severity}: {f.message} [{f.rule}]" for f in review.findings]
    return "\n".join(out)


def _cell(text: str) -> str:
    """``text`` safe inside one Markdown table cell (no row breaks, no raw HTML)."""
    text = " ".join(text.split())
    for raw, escaped in (("\\", "\\\\"), ("|", "\\|"), ("<", "&lt;"), (">", "&gt;")):
        text = text.replace(raw, escaped)
    return text


def _code(text: str) -> str:
    if "`" in text or "|" in text:
        return _cell(text)
    return f"`{' '.join(text.split())}`"


def _markdown(review: Review) -> str:
    out = [
        f"**auto-review: {_cell(review.summary)}**",
        "",
        f"Reviewed `{review.head[:12]}` against `{review.base[:12]}` by {_cell(review.reviewer)}.",
    ]
    if review.truncated:
        out.append("The diff was larger than the review's byte cap: later files were not read.")
    if review.skipped:
        out.append(f"Skipped by `ignored_paths`: {', '.join(_code(p) for p in review.skipped)}.")
    if review.findings:
        out += ["", "| Severity | File | Line | Rule | Message |", "|---|---|---:|---|---|"]
        out += [
            f"| {f.severity} | {_code(f.path)} | {f.line} | {_cell(f.rule)} | {_cell(f.message)} |"
            for f in review.findings
        ]
    return "\n".join(out)


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
