"""Commands in pull request comments, the part both forges' webhooks share: which
command a comment gives (:func:`parse_command`), and the job it queues
(:func:`command_comment`). The job runs the command (``jobs/commands.py``).

A command is ``@<AR_BOT_NAME> <word>``, one per comment: the first mention of the bot
(a whole user name, ASCII letters compared without case) followed by a word. The words
are :data:`COMMANDS`; any other word asks for ``help``. A mention followed by no word
("thanks @auto-review") is no command. What a reader does not see as the author's own
words does not count: quoted lines (``> @bot pause``), fenced and indented code blocks,
inline code spans and HTML comments. Only the first :data:`MAX_SCAN_CHARS` characters
are read (a huge body costs no more than that), and nothing is normalised: a look-alike
of the bot's name (Cyrillic letters, the Kelvin sign, the full-width at sign) is not it.

The job's ``reason`` carries the command and its author, so the queue's schema stays
as it is: ``command:<word>:<login>``, and on GitHub ``command:<word>:<login>:<ASSOC>``
(the comment's ``author_association``; the worker compares it with
``GITHUB_MIN_ASSOCIATION``). Everyone's command is queued, so that the worker can
answer a refusal visibly (rate-limited per PR); the webhook ignores only comments it
cannot attribute (the bot itself, another bot, a login that is not a user name).

The head is read from the forge when the job runs, not here: a webhook's answer must
reach the forge within its delivery timeout (a few seconds), so this makes no forge call.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any

from auto_review_gateway.core import names
from auto_review_gateway.intake.endpoint import Intake, Reply, enqueue
from auto_review_gateway.intake.fields import (
    BadRequest,
    want_clone_url,
    want_number,
    want_obj,
    want_repository,
)

COMMANDS = ("help", "re-review", "full-review", "pause", "resume")
PREFIX = "command:"
MAX_SCAN_CHARS = 65536  # GitHub's and Forgejo's comments are at most 65536 characters
DEFAULT_BOT_NAME = "auto-review"

_FENCE = re.compile(r"\A {0,3}(`{3,}|~{3,})")
_QUOTE = re.compile(r"\A {0,3}>")
_INDENTED = re.compile(r"\A(?: {4}|\t)")
_WORD = re.compile(r"[ \t]+([^\s`<>]{1,40})", re.ASCII)
_ASSOCIATION = re.compile(r"\A[A-Z_]{1,40}\Z")


def bot_name(env: Mapping[str, str]) -> str:
    """The bot's user name from ``AR_BOT_NAME`` (``serve`` checks it at start)."""
    return env.get("AR_BOT_NAME", "").strip().lstrip("@") or DEFAULT_BOT_NAME


def _drop_code_spans(text: str) -> str:
    """``text`` with its inline code spans blanked (CommonMark: a run of n backticks up to
    the next run of exactly n). Linear: each run length keeps a cursor into its runs."""
    runs = [(m.start(), m.end() - m.start()) for m in re.finditer(r"`+", text)]
    by_length: dict[int, list[int]] = {}
    for index, (_start, length) in enumerate(runs):
        by_length.setdefault(length, []).append(index)
    cursor = dict.fromkeys(by_length, 0)
    out, kept, index = [], 0, 0
    while index < len(runs):
        start, length = runs[index]
        same = by_length[length]
        while cursor[length] < len(same) and same[cursor[length]] <= index:
            cursor[length] += 1
        if cursor[length] == len(same):
            index += 1  # no closing run: literal backticks
            continue
        closing = same[cursor[length]]
        end = runs[closing][0] + length
        out.append(text[kept:start])
        out.append(" ")
        kept, index = end, closing + 1
    out.append(text[kept:])
    return "".join(out)


def _drop_html_comments(text: str) -> str:
    out, at = [], 0
    while (start := text.find("<!--", at)) != -1:
        out.append(text[at:start])
        end = text.find("-->", start + 4)
        at = len(text) if end == -1 else end + 3
        out.append(" ")
    out.append(text[at:])
    return "".join(out)


def visible_text(body: str) -> str:
    """The author's own words of a Markdown comment: no quotes, code or HTML comments."""
    lines, fence = [], None
    for line in body[:MAX_SCAN_CHARS].splitlines():
        if fence is not None:
            stripped = line.strip()
            if stripped.startswith(fence) and set(stripped) == {fence[0]}:
                fence = None
            continue
        opened = _FENCE.match(line)
        if opened:
            fence = opened.group(1)
            continue
        if _QUOTE.match(line) or _INDENTED.match(line):
            lines.append("")
            continue
        lines.append(line)
    return _drop_code_spans(_drop_html_comments("\n".join(lines)))


def parse_command(body: Any, bot: str) -> str | None:
    """The command ``body`` gives the bot named ``bot`` (a word of COMMANDS; "help" for
    any other word), or None when it gives none (see the module doc)."""
    if not isinstance(body, str) or not bot:
        return None
    mention = re.compile(rf"(?<![\w@/.-])@{re.escape(bot)}(?![\w-])", re.IGNORECASE | re.ASCII)
    found = mention.search(visible_text(body))
    if found is None:
        return None
    word = _WORD.match(found.string, found.end())
    if word is None:
        return None
    said = word.group(1).rstrip(".,:;!?").lower()
    return said if said in COMMANDS else "help"


@dataclasses.dataclass(frozen=True)
class Command:
    """A command as a job carries it: the word, its author, GitHub's association."""

    word: str
    login: str
    association: str | None = None

    @property
    def reason(self) -> str:
        """The job's ``reason`` (see the module doc)."""
        tail = f":{self.association}" if self.association else ""
        return f"{PREFIX}{self.word}:{self.login}{tail}"


def parse_reason(reason: str) -> Command | None:
    """The command a job's ``reason`` carries; None when it carries none (or a bad one)."""
    if not reason.startswith(PREFIX):
        return None
    parts = reason[len(PREFIX) :].split(":")
    if len(parts) not in (2, 3) or parts[0] not in COMMANDS or not names.is_name(parts[1]):
        return None
    association = parts[2] if len(parts) == 3 else None
    if association is not None and not _ASSOCIATION.match(association):
        return None
    return Command(parts[0], parts[1], association)


# A forge's answer for a comment's author: (login, association or None), or why not.
AuthorRule = Callable[[Intake, dict[str, Any]], "tuple[str, str | None] | str"]


def command_comment(
    intake: Intake,
    doc: dict[str, Any],
    delivery: str | None,
    *,
    on_pull: Callable[[dict[str, Any], dict[str, Any]], bool],
    author: AuthorRule,
    owner_keys: tuple[str, ...],
) -> Reply:
    """An ``issue_comment`` delivery: enqueue the command it gives, or say why not.

    The forge supplies what differs: ``on_pull(issue, doc)``, whether the comment is on
    a pull request; ``author(intake, comment)``, its author's login and association (or
    why it is not read); ``owner_keys``, where ``repository.owner`` keeps its name.
    """
    if doc.get("action") != "created":
        return Reply(200, {"ignored": "only new comments are read"})
    issue = want_obj(doc, "issue", "payload")
    if not on_pull(issue, doc):
        return Reply(200, {"ignored": "comment on an issue, not a pull request"})
    comment = want_obj(doc, "comment", "payload")
    word = parse_command(comment.get("body"), intake.bot_name)
    if word is None:
        return Reply(200, {"ignored": "comment gives the bot no command"})
    who = author(intake, comment)
    if isinstance(who, str):
        return Reply(200, {"ignored": who})
    if issue.get("state") == "closed":
        return Reply(200, {"ignored": "pull request is closed"})
    owner, repo, repository = want_repository(doc, owner_keys)
    number = want_number(issue.get("number"), "issue.number")
    try:
        clone_url = want_clone_url(repository.get("clone_url"), "repository.clone_url")
    except BadRequest:
        clone_url = intake.forge.repo_clone_url(owner, repo)
    # Queued without a head: the worker reads the PR's current head when it runs.
    request = intake.job_request(
        owner=owner,
        repo=repo,
        pr_number=number,
        head_sha="",
        base_ref="",
        clone_url=clone_url,
        reason=Command(word, *who).reason,
        delivery_id=delivery,
        force=True,
    )
    return enqueue(intake, request)


def comment_author(comment: dict[str, Any], bot: str) -> tuple[str, None] | str:
    """``(login, None)`` of a comment's author, or why the comment is not read: the bot
    itself (its own replies must not command it), a login that is no user name."""
    user = comment.get("user")
    login = user.get("login") if isinstance(user, dict) else None
    if not isinstance(login, str) or not names.is_name(login):
        return "comment author has no usable login"
    if login.lower() == bot.lower():
        return "comment by the bot itself"
    return login, None
