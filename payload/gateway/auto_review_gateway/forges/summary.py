"""One summary comment per pull request, kept current: rendered from what the gateway
remembers of the PR (:class:`~auto_review_gateway.core.prstate.PrState`) and written by
:func:`upsert_summary`, which edits the comment in place (Forgejo ``issueEditComment``,
GitHub ``issues/update-comment``) and creates it on the first review, or again when a
person deleted it. A comment by anyone else is never edited, whatever it says.

The summary is readable in ten seconds: the first lines say what the latest review
covered and what is open now; the details (open findings, the walkthrough of the
changed files, one line per review) follow.
"""

from __future__ import annotations

from typing import Any, Protocol

from auto_review_gateway.core.escape import md_code, md_text
from auto_review_gateway.core.model import SEVERITIES, severity_rank
from auto_review_gateway.core.prstate import PrState

MARKER = "<!-- auto-review summary -->"
MAX_LISTED = 50
MAX_SHOWN_CHARS = 200  # of a path or a message (a path may be 4 KB long)
MAX_BODY_CHARS = 60_000  # under GitHub's 65,536 for a comment


class Comments(Protocol):
    """What :func:`upsert_summary` needs of a forge client."""

    def create_comment(self, owner: str, repo: str, index: int, body: str) -> int: ...
    def edit_comment(self, owner: str, repo: str, comment_id: int, body: str) -> None: ...
    def get_comment(self, owner: str, repo: str, comment_id: int) -> dict[str, Any] | None: ...
    def list_comments(self, owner: str, repo: str, index: int) -> list[dict[str, Any]]: ...
    def is_mine(self, comment: dict[str, Any]) -> bool | None: ...


def _short(sha: str) -> str:
    return md_code(sha[:12]) if sha else "?"


def _counts(state: PrState) -> str:
    counts = {s: 0 for s in SEVERITIES}
    for f in state.open_findings():
        counts[f.severity] += 1
    parts = [f"{n} {s}" for s, n in reversed(counts.items()) if n]
    return ", ".join(parts) if parts else "none"


def _cut(text: str) -> str:
    return text if len(text) <= MAX_SHOWN_CHARS else text[: MAX_SHOWN_CHARS - 1] + "…"


def render_summary(
    state: PrState, walkthrough: list[tuple[str, str]], notes: list[str], bot: str
) -> str:
    """The summary's Markdown. ``walkthrough``: (path, one line on its change) of the
    latest review; ``notes``: lines to show under the headline (already Markdown). At
    most MAX_BODY_CHARS: the lists are shortened until it fits."""
    for listed in (MAX_LISTED, 10, 0):
        body = _render(state, walkthrough, notes, bot, listed)
        if len(body) <= MAX_BODY_CHARS:
            break
    return body[:MAX_BODY_CHARS]


def _render(
    state: PrState, walkthrough: list[tuple[str, str]], notes: list[str], bot: str, listed: int
) -> str:
    latest = state.reviews[-1] if state.reviews else None
    lines = [MARKER, "### auto-review summary", ""]
    if latest is None:
        lines.append("No review yet.")
    elif latest.kind in ("full", "incremental", "skipped"):
        span = f"{_short(latest.from_sha)}..{_short(latest.head_sha)}"
        how = "built-in rules only" if latest.kind == "skipped" else latest.kind
        lines.append(
            f"**Latest review** ({how}): {span}, {latest.files} file(s), "
            f"{latest.new} new finding(s), {latest.resolved} resolved."
        )
    else:
        lines.append(f"**Latest push** {_short(latest.head_sha)}: not reviewed ({latest.kind}).")
        if latest.note:
            lines.append(md_text(latest.note))
    resolved = sum(1 for f in state.findings if f.state == "resolved")
    lines += ["", f"**Open findings:** {_counts(state)} · **resolved:** {resolved}"]
    if state.paused:
        lines += ["", f"Reviews are **paused** on this PR: comment `@{bot} resume` to resume."]
    lines += [f"\n{note}" for note in notes]
    open_ = sorted(state.open_findings(), key=lambda f: (-severity_rank(f.severity), f.path))
    if open_:
        lines += ["", f"<details><summary>Open findings ({len(open_)})</summary>", ""]
        for f in open_[:listed]:
            where = md_code(_cut(f"{f.path}:{f.line}"))
            lines.append(
                f"- {where} **{f.severity}** {md_text(_cut(f.rule))}: {md_text(_cut(f.message))}"
            )
        if len(open_) > listed:
            lines.append(f"- ... {len(open_) - listed} more")
        lines += ["", "</details>"]
    if walkthrough:
        lines += ["", "<details><summary>Walkthrough</summary>", "", "| file | change |",
                  "| --- | --- |"]  # fmt: skip
        for path, what in walkthrough[:listed]:  # md_text escapes "|" in a cell itself
            lines.append(f"| {md_code(_cut(path), in_table=True)} | {md_text(_cut(what))} |")
        if len(walkthrough) > listed:
            lines.append(f"| ... | {len(walkthrough) - listed} more file(s) |")
        lines += ["", "</details>"]
    if state.reviews:
        lines += ["", "<details><summary>History</summary>", ""]
        lines += ["| head | review | new | resolved | verdict |", "| --- | --- | --- | --- | --- |"]
        for e in state.reviews[-max(listed, 1) :]:
            lines.append(
                f"| {_short(e.head_sha)} | {e.kind} | {e.new} | {e.resolved} | {e.verdict or '-'} |"
            )
        lines += ["", "</details>"]
    lines += ["", f"Commands: comment `@{bot} help`."]
    return "\n".join(lines)


def upsert_summary(
    client: Comments, owner: str, repo: str, index: int, comment_id: int | None, body: str
) -> int:
    """Write ``body`` as the PR's summary: edit the comment ``comment_id`` when it is
    still there, the bot's and a summary; else edit the bot's summary found on the PR
    (one left by a run that died before it could remember it); else create one. The
    id of the comment written."""
    if comment_id is not None:
        found = client.get_comment(owner, repo, comment_id)
        if found is not None and _ours(client, found):
            client.edit_comment(owner, repo, comment_id, body)
            return comment_id
    for comment in client.list_comments(owner, repo, index):
        if isinstance(comment.get("id"), int) and _ours(client, comment, strict=True):
            client.edit_comment(owner, repo, comment["id"], body)
            return int(comment["id"])
    return client.create_comment(owner, repo, index, body)


def _ours(client: Comments, comment: dict[str, Any], *, strict: bool = False) -> bool:
    """A summary the bot wrote. ``strict``: the forge must say it is the bot's (a comment
    found by its text alone could be anyone's copy of the marker)."""
    if MARKER not in str(comment.get("body") or ""):
        return False
    mine = client.is_mine(comment)
    return mine is True or (mine is None and not strict)
