"""Commands in PR comments: which comment gives which command (hostile bodies included),
the reason a job carries it in, and the worker running it against the strict Forgejo and
GitHub stand-ins with the real job database (who may, the replies, the rate-limited
refusal, pause and resume, the permission cache on an injected clock)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "payload" / "gateway"))
from auto_review_gateway.forges.commands import Command, parse_command, parse_reason
from auto_review_gateway.forges.forgejo import client as forgejo
from auto_review_gateway.forges.forgejo.config import ForgejoConfig
from auto_review_gateway.forges.github import client as github
from auto_review_gateway.jobs import commands
from auto_review_gateway.jobs.history import PrHistory
from auto_review_gateway.jobs.spec import Job, JobRequest

from tests.fake_forgejo import BOT_LOGIN, FakeForgejo
from tests.fake_github import FakeGitHub

BOT = "auto-review"
TOKEN = "forge-token-for-command-tests"


@pytest.mark.parametrize(
    ("body", "command"),
    [
        ("@auto-review help", "help"),
        ("@auto-review pause", "pause"),
        ("@AUTO-REVIEW Pause.", "pause"),
        ("please @auto-review full-review, thanks", "full-review"),
        ("@auto-review re-review\n", "re-review"),
        ("@auto-review resume!", "resume"),
        ("@auto-review dance", "help"),  # an unknown word asks for help
        ("@auto-review p\u0430use", "help"),  # Cyrillic a: not the word pause
        ("@auto-review pause @auto-review resume", "pause"),  # one per comment: the first
        ("@auto-review-bot pause @auto-review resume", "resume"),  # another user first
        ("> quoted\n@auto-review resume", "resume"),
        ("`@auto-review pause", "pause"),  # an unclosed backtick is a literal one
        ("~~~\n@auto-review pause\n~~~\n@auto-review resume", "resume"),
        ("``x`` @auto-review help", "help"),
        ("thanks @auto-review", None),  # a mention with no word is no command
        ("@auto-review", None),
        ("@auto-review\u00a0pause", None),  # no-break space: no word follows
        ("> @auto-review pause", None),  # quoted text is not the author's
        ("   > > @auto-review pause", None),
        ("`@auto-review pause`", None),  # code span
        ("``a ` @auto-review pause ``", None),
        ("```\n@auto-review pause\n```", None),  # fenced code
        ("````\n```\n@auto-review pause\n````", None),
        ("    @auto-review pause", None),  # indented code
        ("<!-- @auto-review pause -->", None),
        ("mail@auto-review pause", None),
        ("@\u0430uto-review pause", None),  # Cyrillic a in the name
        ("\uff20auto-review pause", None),  # full-width at sign
        ("@auto\u200b-review pause", None),  # zero-width space
        ("@auto\u2010review pause", None),  # Unicode hyphen
        ("@auto-revieW\u0307 pause", None),  # a combining mark makes another name
        (None, None),
        (42, None),
    ],
)
def test_which_comment_gives_which_command(body: object, command: str | None) -> None:
    assert parse_command(body, BOT) == command


def test_case_folding_is_ascii_only() -> None:
    # Python folds the Kelvin sign to k and the long s to s; a user name does not.
    assert parse_command("@kit pause", "kit") == "pause"
    assert parse_command("@\u212ait pause", "kit") is None
    assert parse_command("@\u017fam pause", "sam") is None


def test_huge_and_pathological_bodies_are_read_within_the_cap() -> None:
    far = "x " * 40_000 + "@auto-review pause"  # beyond the first 64 Ki characters
    assert parse_command(far, BOT) is None
    runs = " ".join("`" * n for n in range(1, 300)) + " @auto-review pause"
    assert parse_command(runs, BOT) == "pause"  # no run closes another: all literal
    mentions = "@auto-review-x " * 5000 + "@auto-review help"
    assert parse_command(mentions, BOT) is None  # the mention is past the cap
    assert parse_command("@auto-review-x " * 4000 + "@auto-review help", BOT) == "help"
    assert parse_command("<!--" * 20_000 + "@auto-review pause", BOT) is None
    assert parse_command("`" * 70_000, BOT) is None


def test_a_reason_carries_the_command_and_its_author() -> None:
    assert Command("pause", "alice").reason == "command:pause:alice"
    assert Command("help", "bob", "MEMBER").reason == "command:help:bob:MEMBER"
    assert parse_reason("command:pause:alice") == Command("pause", "alice")
    assert parse_reason("command:help:bob:MEMBER") == Command("help", "bob", "MEMBER")
    for bad in (
        "pull_request:opened",
        "command:re-review",
        "command:dance:alice",
        "command:pause:al/ice",
        "command:pause:..",
        "command:pause:alice:member",
        "command:pause:alice:MEMBER:x",
    ):
        assert parse_reason(bad) is None, bad


# --------------------------------------------------------------------------- the worker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def forge() -> Iterator[FakeForgejo]:
    with FakeForgejo(token=TOKEN) as server:
        server.set_pull("acme", "demo", 7, "a" * 40)
        server.set_permission("acme", "demo", BOT_LOGIN, "admin")
        server.set_permission("acme", "demo", "alice", "write")
        server.set_permission("acme", "demo", "olga", "owner")
        server.set_permission("acme", "demo", "mallory", "read")
        yield server


@pytest.fixture
def history(tmp_path: Path) -> Iterator[PrHistory]:
    clock = Clock()
    store = PrHistory(str(tmp_path / "jobs.sqlite3"), clock=clock)
    store.clock_ = clock  # type: ignore[attr-defined]
    yield store
    store.close()


def command_job(word: str, login: str, job_id: int = 1, association: str | None = None) -> Job:
    request = JobRequest(
        owner="acme",
        repo="demo",
        pr_number=7,
        head_sha="",
        base_ref="",
        clone_url="https://forge.invalid/acme/demo.git",
        reason=Command(word, login, association).reason,
        force=True,
    )
    return Job(id=job_id, request=request, attempts=1)


def run(
    forge: FakeForgejo, history: PrHistory, word: str, login: str, perms: commands.Permissions
) -> JobRequest | None:
    client = forgejo.Forgejo(ForgejoConfig(f"{forge.url}/api/v1", TOKEN), retry=None)
    job = command_job(word, login)
    key = commands.pr_key(client, job.request)
    return commands.run_command(job, client, history, key, bot=BOT, permissions=perms)


def bodies(forge: FakeForgejo) -> list[str]:
    return [c["body"] for c in forge.comments.on("acme", "demo", 7)]


def test_help_from_a_writer_and_a_refusal_for_a_stranger_once_per_interval(
    forge: FakeForgejo, history: PrHistory
) -> None:
    perms = commands.Permissions(clock=Clock())
    assert run(forge, history, "help", "alice", perms) is None
    [reply] = bodies(forge)
    assert reply.startswith("@alice: Commands for auto-review")
    for word in ("help", "re-review", "full-review", "pause", "resume"):
        assert f"`@auto-review {word}`" in reply
    assert parse_command(reply, BOT) is None  # the bot's reply commands nothing
    assert run(forge, history, "pause", "mallory", perms) is None
    assert len(bodies(forge)) == 2 and bodies(forge)[1].startswith("@mallory: only people who")
    assert "\n" not in bodies(forge)[1]
    assert not history.load(
        commands.pr_key(forgejo_client(forge), command_job("x", "y").request)
    ).paused
    assert run(forge, history, "help", "mallory", perms) is None  # within the interval
    assert run(forge, history, "help", "nobody-known", perms) is None  # 404: no permission
    assert len(bodies(forge)) == 2
    history.clock_.now += 601  # type: ignore[attr-defined]
    assert run(forge, history, "help", "mallory", perms) is None
    assert len(bodies(forge)) == 3


def forgejo_client(forge: FakeForgejo) -> forgejo.Forgejo:
    return forgejo.Forgejo(ForgejoConfig(f"{forge.url}/api/v1", TOKEN), retry=None)


def test_pause_resume_and_the_reviews_commands(forge: FakeForgejo, history: PrHistory) -> None:
    perms = commands.Permissions(clock=Clock())
    key = commands.pr_key(forgejo_client(forge), command_job("pause", "alice").request)
    assert run(forge, history, "pause", "alice", perms) is None
    assert history.load(key).paused
    assert run(forge, history, "pause", "olga", perms) is None
    assert history.load(key).paused
    assert "Already paused" in bodies(forge)[-1]
    assert run(forge, history, "help", "alice", perms) is None
    assert "**paused**" in bodies(forge)[-1]
    assert run(forge, history, "resume", "alice", perms) is None
    assert not history.load(key).paused and "Resumed" in bodies(forge)[-1]
    again = run(forge, history, "full-review", "alice", perms)
    assert again is not None and again.reason == "command:full-review"
    assert (again.head_sha, again.force) == ("", True)
    again = run(forge, history, "re-review", "alice", perms)
    assert again is not None and again.reason == "command:re-review"
    assert len(bodies(forge)) == 6


def test_only_a_commands_job_is_run_as_a_command(forge: FakeForgejo, history: PrHistory) -> None:
    client = forgejo_client(forge)
    pushed = JobRequest(
        "acme", "demo", 7, "b" * 40, "main", "https://x.invalid/a.git", "pull_request:synchronized"
    )
    history.set_paused(commands.pr_key(client, pushed), True)
    push = Job(id=9, request=pushed, attempts=1)
    assert commands.before_review(push, client, history) == pushed  # follow.Run's to skip
    asked = command_job("re-review", "alice", job_id=11)
    review = commands.before_review(asked, client, history)  # a command runs when paused
    assert review is not None and review.reason == "command:re-review"
    odd = Job(id=12, request=dataclasses.replace(pushed, reason="command:dance"), attempts=1)
    assert commands.before_review(odd, client, history) is None
    assert len(bodies(forge)) == 1


def test_forgejo_permissions_are_cached_on_the_clock(
    forge: FakeForgejo, history: PrHistory
) -> None:
    clock = Clock()
    perms = commands.Permissions(ttl=60, clock=clock)
    for _ in range(3):
        run(forge, history, "help", "alice", perms)
    assert len(forge.of_kind("permission")) == 1
    clock.now += 61
    forge.set_permission("acme", "demo", "alice", "read")  # alice lost write meanwhile
    run(forge, history, "pause", "alice", perms)
    assert len(forge.of_kind("permission")) == 2
    assert bodies(forge)[-1].startswith("@alice: only people who")


def test_a_bot_that_may_not_ask_refuses_and_says_why(
    forge: FakeForgejo, history: PrHistory
) -> None:
    forge.set_permission("acme", "demo", BOT_LOGIN, "write")  # not admin: 403
    assert run(forge, history, "pause", "alice", commands.Permissions(clock=Clock())) is None
    [reply] = bodies(forge)
    assert "needs admin on the repository" in reply and "\n" not in reply


def test_github_commands_follow_the_author_association(history: PrHistory) -> None:
    token = "ghp_" + "c" * 36
    with FakeGitHub(tokens=(token,)) as hub:
        hub.set_pull("acme", "demo", 7, "a" * 40)
        config = github.GitHubConfig(hub.api_url, static_token=token, min_association="MEMBER")
        client = github.GitHub(config)
        for login, association in (("bob", "CONTRIBUTOR"), ("carol", "MEMBER")):
            job = command_job("pause", login, association=association)
            key = commands.pr_key(client, job.request)
            assert commands.run_command(job, client, history, key, bot=BOT) is None
        replies = [c["body"] for c in hub.comments.on("acme", "demo", 7)]
        assert replies[0].startswith("@bob: only people who") and "Paused" in replies[1]
        assert history.load(key).paused


def test_the_history_beside_the_queue_keeps_the_queues_locks(tmp_path: Path) -> None:
    # Both open the same file in one process; a process that reads the queue (e.g.
    # `auto-review jobs`) and closes must not delete the write-ahead log still in use.
    from auto_review_gateway.jobs.queue import JobQueue

    path = str(tmp_path / "jobs.sqlite3")
    queue = JobQueue(path, max_pending=10)
    store = PrHistory(path)
    try:
        reader = "import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); print(db.execute(sys.argv[2]).fetchone()[0]); db.close()"  # noqa: E501
        count = [sys.executable, "-c", reader, path, "SELECT COUNT(*) FROM jobs"]
        assert subprocess.run(count, capture_output=True, text=True).stdout == "0\n"
        queue.submit(command_job("help", "alice").request)
        assert subprocess.run(count, capture_output=True, text=True).stdout == "1\n"
        assert os.path.exists(path + "-wal")
    finally:
        store.close()
        queue.close()
