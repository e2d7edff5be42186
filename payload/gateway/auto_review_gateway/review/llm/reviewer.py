"""The LLM reviewer: the whole diff, cut into groups that each fit one call, reviewed in
parallel, every group's findings checked by a verifier pass, strict JSON in and out.

The prompt is built in :mod:`prompt`, the groups in :mod:`groups`, the answer checked in
:mod:`answer`, the second opinion asked in :mod:`verifier`, and the exchange with the
server is :mod:`exchange`. Trust boundaries:

* The system messages are constants (:data:`SYSTEM_PROMPT`, the verifier's): our
  instructions and the answer's JSON schema. Nothing from the repository is ever put in.
* The repository's guidelines, the PR's title and description, the list of changed
  files, the diff and the code around it (:mod:`~auto_review_gateway.review.surroundings`)
  go into the user message, between markers that carry a digest of the data itself (so
  the data cannot contain its own end marker), labelled as untrusted data that cannot
  change instructions, schema or verdict.
* The answer is validated against the schema (:mod:`answer`), whatever the server claims to
  enforce: unknown or missing keys, wrong types, unknown severities make it invalid
  (one repair round, then :data:`~auto_review_gateway.core.model.EXIT_REVIEWER`). Findings
  outside the group's changed lines, or below ``AR_SEVERITY_FLOOR``, are dropped.
* Only findings and a walkthrough line a file (shown as text) leave this module: the
  model's summary is discarded (a Review's verdict and summary come from severities).

Budget: one call holds at most ``AR_LLM_CONTEXT_TOKENS`` (estimated from bytes, 3 bytes
a token), less the answer's ``LLM_MAX_TOKENS`` (at most half the window) and the system
prompt. Of the rest, the guidelines, description and file list take a bounded share, the
group's diff up to three quarters of what is left, and the surrounding code the remainder.
At most ``AR_LLM_MAX_CALLS`` groups are sent; groups past the cap, or not done by
``LLM_DEADLINE``, are listed as not reviewed. Any other failure of a call fails the review.

Environment: see :mod:`settings`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

# the module itself: the package's lazy __getattr__ hides it from the rootfs builder
from concurrent.futures.thread import ThreadPoolExecutor

from auto_review_gateway.core import httpjson, metrics
from auto_review_gateway.core.model import (
    EXIT_CONFIG,
    EXIT_REVIEWER,
    Finding,
    ReviewContext,
    ReviewError,
    severity_rank,
)
from auto_review_gateway.core.retry import Retry
from auto_review_gateway.review.llm import groups, verifier
from auto_review_gateway.review.llm.answer import (
    MAX_FINDINGS,
    MAX_RULE_CHARS,
    InvalidAnswer,
    to_findings,
    validate_answer,
)
from auto_review_gateway.review.llm.exchange import (
    OutOfTime,
    Session,
    build_request,
    count_error,
)
from auto_review_gateway.review.llm.prompt import (
    ANSWER_SCHEMA,
    MAX_MESSAGE_CHARS,
    REPAIR_PROMPT,
    SYSTEM_PROMPT,
    build_user_message,
    clip,
    file_list,
    pull_request_text,
    render_diff,
)
from auto_review_gateway.review.llm.settings import LLMConfig, load_config

RETRY_ATTEMPTS = 4
_MAX_ECHO_CHARS = 20_000  # of an invalid answer, sent back in the repair round
_MIN_DIFF_BYTES = 2048  # a call with less room than this for the diff is a bad setting


@dataclasses.dataclass
class Outcome:
    """What the LLM reviewer made of a review: findings, and what a reader must know."""

    findings: list[Finding]
    model: str
    not_reviewed: list[str] = dataclasses.field(default_factory=list)
    dropped: list[tuple[Finding, str]] = dataclasses.field(default_factory=list)
    usage: dict[str, int] = dataclasses.field(default_factory=dict)
    walkthrough: dict[str, str] = dataclasses.field(default_factory=dict)  # path -> one line


@dataclasses.dataclass
class _Plan:
    """The shared parts of every call's user message, and the groups."""

    context: ReviewContext  # with the guidelines clipped to their share
    pull_request: str
    files: str
    room: int  # bytes for a group's diff and surroundings together
    whole_bytes: int  # an incremental review's whole-PR diff, cut to this
    groups: list[groups.Group]


def make_retry(deadline: float) -> Retry:
    """The retry policy of one review's requests (tests replace it to never really sleep)."""
    return Retry(RETRY_ATTEMPTS, deadline=deadline)


def input_bytes(config: LLMConfig) -> int:
    """Bytes of user message one call may carry (module doc, "Budget")."""
    answer = min(config.max_tokens, config.context_tokens // 2)
    system = groups.bytes_to_tokens(len(SYSTEM_PROMPT.encode())) + 64  # + message framing
    return groups.tokens_to_bytes(config.context_tokens - answer - system)


def plan(context: ReviewContext, config: LLMConfig) -> _Plan:
    """Cut ``context`` into the groups of its calls, within the budget of one call."""
    total = input_bytes(config)
    guidelines = clip(context.config.guidelines, total // 8, "the guidelines were cut to fit")
    clipped = dataclasses.replace(
        context, config=dataclasses.replace(context.config, guidelines=guidelines)
    )
    pull = pull_request_text(context, total // 16)
    listing = file_list(context, total // 8)
    empty = dataclasses.replace(clipped, files=[], truncated=False)
    whole = total // 4  # an incremental review's whole-PR diff, as context
    fixed = len(
        build_user_message(
            empty, pull_request=pull, files=listing, surroundings="-", whole_bytes=whole
        ).encode()
    )
    room = total - fixed - 256  # the surroundings' fence and a capped-diff note
    diff_budget = room * 3 // 4 if context.source is not None else room
    if diff_budget < _MIN_DIFF_BYTES:
        raise ReviewError(
            f"AR_LLM_CONTEXT_TOKENS {config.context_tokens} leaves no room for the diff"
            f" (LLM_MAX_TOKENS {config.max_tokens} is kept for the answer): raise it",
            EXIT_CONFIG,
        )
    return _Plan(clipped, pull, listing, room, whole, groups.plan(context.files, diff_budget))


def _surroundings(context: ReviewContext, group: groups.Group, budget: int) -> str:
    """The code around ``group``'s hunks, "" when there is no repository to read or git
    fails (context is a help, not a condition of the review)."""
    if context.source is None or budget <= 0:
        return ""
    from auto_review_gateway.review import surroundings

    try:
        return surroundings.gather(context.source, context.head, group.files, budget)  # type: ignore[arg-type]
    except (ReviewError, OSError, ValueError):
        return ""


def _ask(
    session: Session, sub: ReviewContext, message: str, floor: str
) -> tuple[list[Finding], dict[str, str]]:
    """One group's review: the request, one repair round if the answer is invalid; the
    findings and its files' walkthrough lines."""
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": message}]
    answer = ""
    try:
        answer = session.complete(messages)
        items, _summary, walk = validate_answer(answer)
    except InvalidAnswer as first:
        count_error("invalid_answer")
        messages += [
            {"role": "assistant", "content": answer[:_MAX_ECHO_CHARS] or "(empty answer)"},
            {"role": "user", "content": REPAIR_PROMPT.format(error=first)},
        ]
        try:
            items, _summary, walk = validate_answer(session.complete(messages))
        except InvalidAnswer as second:
            count_error("invalid_answer")
            reason = httpjson.clean_text(str(second), 300)
            raise ReviewError(
                f"LLM answer invalid after one repair attempt: {reason}", EXIT_REVIEWER
            ) from None
    # The summary is dropped (a Review's verdict and summary come from severities); the
    # walkthrough (one line a file, shown as such) is kept for the group's own files.
    mine = {change.path for change in sub.files}
    return to_findings(items, sub, floor), {p: w for p, w in walk.items() if p in mine}


def _check(
    session: Session | None, sub: ReviewContext, found: list[Finding]
) -> tuple[list[Finding], list[tuple[Finding, str]]]:
    """The verifier's pass over ``found``: fails open, counted in /metrics."""
    if session is None or not found:
        return found, []
    try:
        kept, dropped = verifier.verify(session.complete, sub, found)
    except Exception:  # any failure keeps every finding: module doc of verifier
        metrics.count("verifier_errors_total")
        return found, []
    if dropped:
        metrics.count("verifier_dropped_total", len(dropped))
    return kept, dropped


def run(
    context: ReviewContext,
    *,
    config: LLMConfig | None = None,
    retry: Callable[[float], Retry] | None = None,
) -> Outcome:
    """Review all of ``context`` with the configured model (module doc): the Outcome.

    Raises ReviewError with EXIT_REVIEWER when a call fails (HTTP error, timeout, an answer
    still invalid after its repair round) other than by the deadline, and EXIT_CONFIG for
    bad settings. ``config`` defaults to :func:`load_config`.
    """
    config = load_config() if config is None else config
    policy = (retry or make_retry)(time.monotonic() + config.deadline)
    session = Session(config, policy)
    check = None
    if config.verifier_model is not None:
        checker = dataclasses.replace(config, model=config.verifier_model)
        check = Session(checker, policy, ("finding_verdicts", verifier.VERDICT_SCHEMA))
    work = plan(context, config)
    sent, left = work.groups[: config.max_calls], work.groups[config.max_calls :]

    walkthrough: dict[str, str] = {}

    def one(group: groups.Group) -> tuple[list[Finding], list[tuple[Finding, str]]] | None:
        left_time = policy.remaining()
        if left_time is not None and left_time <= 0:
            return None
        sub = dataclasses.replace(work.context, files=group.files)
        around = _surroundings(context, group, work.room - group.size)
        message = build_user_message(
            sub,
            pull_request=work.pull_request,
            files=work.files,
            surroundings=around,
            whole_bytes=work.whole_bytes,
        )
        try:
            found, walk = _ask(session, sub, message, config.floor)
            walkthrough.update(walk)  # each group's own files: no two write one path
        except OutOfTime:
            return None
        except ReviewError:
            left_time = policy.remaining()
            if left_time is not None and left_time <= 0:
                return None  # the deadline cut it short: listed as not reviewed
            raise
        return _check(check, sub, found)

    findings: list[Finding] = []
    dropped: list[tuple[Finding, str]] = []
    not_reviewed: list[str] = []
    with ThreadPoolExecutor(max_workers=max(1, min(config.concurrency, len(sent)))) as pool:
        futures = [pool.submit(one, group) for group in sent]
        try:
            results = [future.result() for future in futures]
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    for group, result in zip(sent, results, strict=True):
        if result is None:
            not_reviewed += group.paths
        else:
            findings += result[0]
            dropped += result[1]
    for group in left:
        not_reviewed += group.paths
    findings = sorted(dict.fromkeys(findings), key=lambda f: -severity_rank(f.severity))
    usage = {k: session.usage[k] + (check.usage[k] if check else 0) for k in session.usage}
    return Outcome(
        findings=findings[:MAX_FINDINGS],
        model=config.model,
        not_reviewed=list(dict.fromkeys(not_reviewed)),
        dropped=dropped,
        usage=usage,
        walkthrough=walkthrough,
    )


def review(
    context: ReviewContext,
    *,
    config: LLMConfig | None = None,
    retry: Callable[[float], Retry] | None = None,
) -> tuple[list[Finding], str]:
    """:func:`run`'s findings and model name."""
    outcome = run(context, config=config, retry=retry)
    return outcome.findings, outcome.model


__all__ = [  # what callers and tests use of the reviewer, in one place
    "ANSWER_SCHEMA", "MAX_FINDINGS", "MAX_MESSAGE_CHARS", "MAX_RULE_CHARS", "SYSTEM_PROMPT",
    "InvalidAnswer", "LLMConfig", "Outcome", "build_request", "build_user_message", "load_config",
    "render_diff", "review", "run", "to_findings", "validate_answer",
]  # fmt: skip
