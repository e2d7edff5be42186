"""What the gateway sends to the forge: the JSON bodies of a commit status
(``CreateStatusOption``) and of a review (``CreatePullReviewOptions``), as Forgejo's
swagger (``templates/swagger/v1_json.tmpl``) defines them.

Review bodies and comments are Markdown, and paths, rule names and messages come from
the repository (or a model that read it): paths are code spans nothing can close early,
rules and messages escaped prose (``core/escape.py``), so no file name or message
renders as a link, an image, a heading or a finding of its own.
"""

from __future__ import annotations

from typing import Any

from auto_review_gateway.core import httpjson
from auto_review_gateway.core.escape import md_code, md_text
from auto_review_gateway.core.model import Finding, Review

STATUS_CONTEXT = "auto_review"
STATES = ("pending", "success", "failure", "error")
MAX_DESCRIPTION_CHARS = 140  # what forges show of a status description
MARKER = "<!-- auto-review run {key} -->"  # hidden in the body: this run's review


def status_body(state: str, description: str) -> dict[str, str]:
    """The ``CreateStatusOption`` JSON for the ``auto_review`` context."""
    if state not in STATES:
        raise ValueError(f"state must be one of {', '.join(STATES)}")
    return {
        "state": state,
        "context": STATUS_CONTEXT,
        "description": httpjson.clean_text(description, MAX_DESCRIPTION_CHARS),
        "target_url": "",
    }


def _code(text: str) -> str:
    """``text`` (at most 200 characters of it) as inline Markdown code."""
    return md_code(text if len(text) <= 200 else text[:199] + "…")


def comment_text(finding: Finding) -> str:
    """The Markdown of one finding's comment: severity, rule and message."""
    return f"**{finding.severity}** {md_text(finding.rule)}: {md_text(finding.message)}"


def render_body(review: Review) -> str:
    """The review's Markdown body: verdict and summary first, then the facts behind them."""
    lines = [
        f"### auto-review: {review.verdict}",
        "",
        review.summary,
        "",
        f"Reviewer: {_code(review.reviewer)} · base {_code(review.base[:12])} · "
        f"head {_code(review.head[:12])}",
    ]
    if review.findings:
        lines.append("")
        lines.append(f"{len(review.findings)} finding(s), shown as inline comments.")
    if review.truncated:
        lines += ["", "The diff was larger than the review limit: only part of it was reviewed."]
    if review.skipped:
        shown = ", ".join(_code(path) for path in review.skipped[:20])
        more = f" and {len(review.skipped) - 20} more" if len(review.skipped) > 20 else ""
        lines += ["", f"Skipped (ignored paths): {shown}{more}"]
    if review.too_large:
        shown = ", ".join(f"{_code(path)} ({size} bytes)" for path, size in review.too_large[:20])
        more = f" and {len(review.too_large) - 20} more" if len(review.too_large) > 20 else ""
        lines += ["", f"Too large to review (listed, not read): {shown}{more}"]
    if review.not_reviewed:
        shown = ", ".join(_code(path) for path in review.not_reviewed[:50])
        more = f" and {len(review.not_reviewed) - 50} more" if len(review.not_reviewed) > 50 else ""
        lines += ["", f"Not reviewed by the model (call cap or deadline reached): {shown}{more}"]
    if review.dropped:
        lines += ["", f"<details><summary>{len(review.dropped)} finding(s) dropped by the "
                  "verifier</summary>", ""]  # fmt: skip
        lines += [
            f"- {_code(f.path)}:{f.line} {comment_text(f)} — dropped: {md_text(reason)}"
            for f, reason in review.dropped[:50]
        ]
        lines += ["", "</details>"]
    return "\n".join(lines)


def review_body(review: Review) -> dict[str, Any]:
    """The ``CreatePullReviewOptions`` JSON for ``review``: one inline comment per finding."""
    return {
        "body": render_body(review),
        # A failing review requests changes; anything else comments. Never APPROVED:
        # a bot's approval could count towards branch protection.
        "event": "REQUEST_CHANGES" if review.verdict == "fail" else "COMMENT",
        "commit_id": review.head,
        "comments": [
            {
                "path": f.path,
                "new_position": f.line,
                "body": comment_text(f),
            }
            for f in review.findings
        ],
    }


def hook_summary(hook: dict[str, Any]) -> dict[str, Any]:
    """``{"id", "url", "events", "active", "content_type"}`` of a webhook as Forgejo
    (``Hook``) and GitHub (``hook``) render it, the same fields on both; neither sends
    the secret back."""
    config = hook.get("config") if isinstance(hook.get("config"), dict) else {}
    events = hook.get("events") if isinstance(hook.get("events"), list) else []
    return {
        "id": hook.get("id"),
        "url": str(config.get("url", "")),
        "events": sorted(str(e) for e in events),
        "active": hook.get("active") is True,
        "content_type": str(config.get("content_type", "")),
    }
