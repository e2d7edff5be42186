"""Reviews that follow a pull request (jobs/follow.py, jobs/history.py, forges/summary.py):
config from the base, incremental reviews, no repeated findings, one summary comment
edited in place, pause, skip_paths, and consistency after a SIGKILL mid-publication.

The jobs run as the service runs them (``run_review_job`` with a history on a file, a
new history object per job as after a restart) against the strict stand-ins: the
Forgejo and GitHub stand-ins (comment bodies validated against the swagger and the
OpenAPI document), a TLS git server with real repositories pushed to between jobs.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_forgejo import FakeForgejo
from tests.fake_openai import FakeOpenAI
from tests.gitserver import CertFiles, GitHttpsServer, commit, make_ca, make_repo

GATEWAY = Path(__file__).resolve().parent.parent / "payload" / "gateway"
sys.path.insert(0, str(GATEWAY))

from auto_review_gateway.core.prstate import PrKey, PrState  # noqa: E402
from auto_review_gateway.forges import summary  # noqa: E402
from auto_review_gateway.jobs import forgejo_job, sqlite_db  # noqa: E402
from auto_review_gateway.jobs.history import PrHistory  # noqa: E402
from auto_review_gateway.jobs.queue import JobQueue  # noqa: E402
from auto_review_gateway.jobs.spec import Job, JobRequest  # noqa: E402

TOKEN = "s3cret-forge-token"
FIXTURE_DB = Path(__file__).resolve().parent / "fixtures" / "jobs-schema2.sqlite3"
BASE = {"README.md": "# demo\n", "src/app.py": "def main():\n    return 0\n"}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return make_ca(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def world(tmp_path: Path, certs: CertFiles, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    """A repository ``demo`` (main = BASE), its git server, the Forgejo stand-in, and
    the state dir's database; the environment a job runs in."""
    root = tmp_path / "repos"
    make_repo(root / "demo.git", BASE)
    for name in ("SSL_CERT_FILE", "GIT_SSL_CAINFO"):
        monkeypatch.setenv(name, str(certs.ca_cert))
    monkeypatch.delenv("LLM_BASE_URL", raising=False)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    with GitHttpsServer(root, certs) as git, FakeForgejo(token=TOKEN) as forge:
        monkeypatch.setenv("FORGEJO_BASE_URL", forge.url)
        monkeypatch.setenv("AR_FORGEJO_TOKEN", TOKEN)
        yield {"git": git, "forge": forge, "repo": root / "demo.git",
               "db": str(tmp_path / "state" / "jobs.sqlite3")}  # fmt: skip


class Pr:
    """Pull request #5 of acme/demo: pushes to its branch and the jobs that follow."""

    def __init__(self, world: dict, branch: str = "topic") -> None:
        self.world = world
        self.branch = branch
        self.jobs = 0
        subprocess.run(["git", "--git-dir", str(world["repo"]), "branch", branch, "main"],
                       check=True)  # fmt: skip

    def push(self, files: dict, message: str = "push") -> str:
        """One commit on the PR's branch; its SHA."""
        return commit(self.world["repo"], files, message, branch=self.branch)

    def review(
        self,
        head: str,
        reason: str = "pull_request:synchronized",
        job_id: int = 0,
        history: PrHistory | None = None,
    ) -> Job:
        """Run the job for ``head`` as the service does (a fresh history on the state
        dir's database, as after a restart, unless ``history`` is shared)."""
        self.jobs += 1
        req = JobRequest("acme", "demo", 5, head, "main", self.world["git"].repo_url("demo"),
                         reason, force=reason.startswith("command"))  # fmt: skip
        job = Job(id=job_id or self.jobs, request=req, attempts=1)
        own = history is None
        history = PrHistory(self.world["db"]) if history is None else history
        try:
            forgejo_job.run_review_job(job, history)
        finally:
            if own:
                history.close()
        return job

    def state(self) -> PrState:
        history = PrHistory(self.world["db"])
        try:
            return history.load(PrKey(self.world["forge"].url + "/api/v1", "acme", "demo", 5))
        finally:
            history.close()


def inline(forge: FakeForgejo) -> list[list[tuple[str, int, str]]]:
    """The inline comments of each review posted: (path, line, rule)."""
    return [
        [(c["path"], c["new_position"], c["body"].split()[1].rstrip(":")) for c in r["comments"]]
        for r in forge.reviews()
    ]


def summaries(forge: FakeForgejo) -> list[dict]:
    return [c for c in forge.comments.on("acme", "demo", 5) if summary.MARKER in c["body"]]


def final_states(forge: FakeForgejo) -> list[str]:
    return [s["state"] for s in forge.statuses() if s["state"] != "pending"]


def test_three_pushes_three_incremental_reviews_one_summary_edited_in_place(world: dict) -> None:
    forge, pr = world["forge"], Pr(world)
    heads = [
        pr.push({"src/one.py": "a = 1   \n"}),
        pr.push({"src/two.py": "b = 2\t\n"}),
        pr.push({"src/three.py": "<<<<<<< HEAD\n"}),
    ]
    for head in heads:
        pr.review(head)
    # Each review covered its own commit: one new finding each, none posted twice.
    assert inline(forge) == [
        [("src/one.py", 1, "trailing-whitespace")],
        [("src/two.py", 1, "trailing-whitespace")],
        [("src/three.py", 1, "conflict-marker")],
    ]
    reviews = pr.state().reviews
    assert [(r.kind, r.from_sha, r.head_sha) for r in reviews[1:]] == [
        ("incremental", heads[0], heads[1]),
        ("incremental", heads[1], heads[2]),
    ]
    assert reviews[0].kind == "full" and [r.files for r in reviews] == [1, 1, 1]
    # Exactly one summary, created by the first review and edited by the next two.
    [comment] = summaries(forge)
    assert forge.comments.edits[comment["id"]] == 2
    assert "**Open findings:** 1 high, 2 low" in comment["body"]
    assert f"{heads[1][:12]}`..`{heads[2][:12]}" in comment["body"]
    # The status counts every open finding, not only the new one.
    assert final_states(forge) == ["success", "success", "failure"]


def test_a_fixed_finding_is_resolved_and_a_moved_one_is_not_posted_again(world: dict) -> None:
    forge, pr = world["forge"], Pr(world)
    pr.review(pr.push({"src/a.py": "x = 1   \ny = 2  \n"}))
    assert len(inline(forge)[0]) == 2
    # The next push fixes one line and moves the other down: only the fix shows.
    pr.review(pr.push({"src/a.py": "# moved\nx = 1\n\ny = 2  \n"}))
    assert len(forge.reviews()) == 1  # nothing new to say inline
    state = pr.state()
    assert sorted(f.state for f in state.findings) == ["open", "resolved"]
    assert state.reviews[-1].resolved == 1
    body = summaries(forge)[0]["body"]
    assert "**Open findings:** 1 low · **resolved:** 1" in body


def test_a_force_push_gets_a_full_review_without_repeats(world: dict) -> None:
    forge, pr = world["forge"], Pr(world)
    pr.review(pr.push({"src/a.py": "x = 1   \n"}))
    # Force-push: the branch is rewritten from main; the old head is not an ancestor.
    rewritten = Pr(world, branch="rewritten")
    head = rewritten.push({"src/a.py": "x = 1   \n", "src/b.py": "<<<<<<< HEAD\n"})
    pr.review(head)
    last = pr.state().reviews[-1]
    assert last.kind == "full" and last.files == 2
    # src/a.py's finding was posted before: only src/b.py's is new.
    assert inline(forge)[1] == [("src/b.py", 1, "conflict-marker")]


def test_full_review_reviews_the_whole_pr_but_reposts_nothing(world: dict) -> None:
    forge, pr = world["forge"], Pr(world)
    pr.review(pr.push({"src/a.py": "x = 1   \n"}))
    head = pr.push({"src/b.py": "y = 2\n"})
    pr.review(head)
    assert pr.state().reviews[-1].kind == "incremental"
    pr.review(head, reason="command:full-review")
    last = pr.state().reviews[-1]
    assert (last.kind, last.files, last.new) == ("full", 2, 0)
    assert len(forge.reviews()) == 1
    assert forge.comments.edits[summaries(forge)[0]["id"]] == 2


def test_a_pr_that_adds_enabled_false_is_still_reviewed_and_told_why(world: dict) -> None:
    forge, pr = world["forge"], Pr(world)
    head = pr.push({".auto_review.yaml": "enabled: false\n", "src/a.py": "<<<<<<< HEAD\n"})
    pr.review(head)
    assert inline(forge) == [[("src/a.py", 1, "conflict-marker")]]
    assert final_states(forge) == ["failure"]
    assert "takes effect after merge" in summaries(forge)[0]["body"]


def test_the_bases_enabled_false_is_obeyed(world: dict) -> None:
    forge = world["forge"]
    commit(world["repo"], {".auto_review.yaml": "enabled: false\n"}, "off", branch="main")
    pr = Pr(world)
    pr.review(pr.push({"src/a.py": "<<<<<<< HEAD\n"}))
    assert forge.reviews() == [] and final_states(forge) == ["success"]
    assert "disabled" in forge.statuses()[-1]["description"]
    assert pr.state().reviews[-1].kind == "disabled"


def test_a_lock_file_only_pr_succeeds_without_a_model_call(
    world: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    forge, pr = world["forge"], Pr(world)
    with FakeOpenAI() as api:  # nothing scripted: a call would be answered 500
        monkeypatch.setenv("LLM_BASE_URL", api.base_url)
        monkeypatch.setenv("LLM_API_KEY", "k")
        head = pr.push({"package-lock.json": "{}\n", "vendor/lib/x.py": "x = 1\n"})
        pr.review(head)
        assert api.requests == []
    assert forge.reviews() == [] and final_states(forge) == ["success"]
    assert "skip_paths" in forge.statuses()[-1]["description"]
    assert pr.state().reviews[-1].kind == "skipped"


def test_skip_paths_never_hide_a_debugger_call_or_a_secret_from_the_built_in_rules(
    world: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    forge, pr = world["forge"], Pr(world)
    with FakeOpenAI() as api:
        monkeypatch.setenv("LLM_BASE_URL", api.base_url)
        monkeypatch.setenv("LLM_API_KEY", "k")
        key = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----\n"
        pr.review(pr.push({"api_pb2.py": "breakpoint()\n", "vendor/k.pem": key}))
        assert api.requests == []  # generated and vendored only: the model is not asked
    [rules] = [[r for _p, _l, r in review] for review in inline(forge)]
    assert "debugger" in rules and final_states(forge) == ["failure"]


def test_paused_then_resumed(world: dict) -> None:
    forge, pr = world["forge"], Pr(world)
    key = PrKey(forge.url + "/api/v1", "acme", "demo", 5)
    history = PrHistory(world["db"])
    history.set_paused(key, True)
    history.close()
    pr.review(pr.push({"src/a.py": "x = 1   \n"}))
    assert forge.reviews() == []
    assert "paused" in forge.statuses()[-1]["description"]
    assert "**paused**" in summaries(forge)[0]["body"]
    history = PrHistory(world["db"])
    history.set_paused(key, False)
    history.close()
    pr.review(pr.push({"src/b.py": "y = 1\n"}))
    # Never reviewed before (the paused push was not): the whole PR is.
    assert pr.state().reviews[-1].kind == "full"
    assert inline(forge) == [[("src/a.py", 1, "trailing-whitespace")]]


def test_a_summary_deleted_by_a_person_is_created_again_and_nobody_elses_is_edited(
    world: dict,
) -> None:
    forge, pr = world["forge"], Pr(world)
    pr.review(pr.push({"src/a.py": "x = 1   \n"}))
    [first] = summaries(forge)
    forge.comments.delete(first["id"])
    # A person pastes the bot's marker into a comment of their own.
    copied = forge.comments.add("acme", "demo", 5, f"{summary.MARKER} not the bot",
                                {"id": 99, "login": "mallory"})  # fmt: skip
    pr.review(pr.push({"src/b.py": "y = 1\n"}))
    mine = [c for c in summaries(forge) if c["user"]["login"] == "auto-review-bot"]
    assert len(mine) == 1 and mine[0]["id"] != first["id"]
    assert forge.comments.edits[copied] == 0
    assert forge.comments.get(copied)["body"] == f"{summary.MARKER} not the bot"


def test_sigkill_between_the_review_and_the_summary_is_made_consistent(world: dict) -> None:
    """A gateway killed while its summary was on its way: the review was posted, the
    history recorded, the summary created by the forge but its id never remembered.
    The job's next attempt posts no second review and no second summary."""
    forge, pr = world["forge"], Pr(world)
    head = pr.push({"src/a.py": "x = 1   \n"})
    forge.hold("comment")  # the summary's creation waits in the forge
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys
            sys.path[:0] = [{str(GATEWAY)!r}]
            from auto_review_gateway.jobs import forgejo_job
            from auto_review_gateway.jobs.history import PrHistory
            from auto_review_gateway.jobs.spec import Job, JobRequest
            req = JobRequest("acme", "demo", 5, {head!r}, "main",
                             {world["git"].repo_url("demo")!r}, "pull_request:opened")
            forgejo_job.run_review_job(Job(1, req, 1), PrHistory({world["db"]!r}))
        """)],
        env=dict(os.environ, TMPDIR=tempfile.gettempdir()),
    )  # fmt: skip
    try:
        assert forge.wait_held("comment", 60)
        child.send_signal(signal.SIGKILL)
        assert child.wait(30) == -signal.SIGKILL
    finally:
        child.kill()
        forge.release("comment")  # the forge finishes what it had received
    assert len(forge.reviews()) == 1
    pr.review(head, reason="pull_request:opened", job_id=1)  # the queue runs job 1 again
    assert len(forge.reviews()) == 1
    [comment] = summaries(forge)
    assert "**Open findings:** 1 low" in comment["body"]
    assert [r.job_id for r in pr.state().reviews] == [1]
    assert final_states(forge) == ["success"]


def test_the_history_survives_an_upgrade_of_todays_database(tmp_path: Path) -> None:
    """tests/fixtures/jobs-schema2.sqlite3 was written by the release before the PR
    history (schema 2): one job done, one waiting for a retry, one pending."""
    path = tmp_path / "jobs.sqlite3"
    shutil.copyfile(FIXTURE_DB, path)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    db.close()
    queue = JobQueue(str(path))
    history = PrHistory(str(path))
    try:
        assert queue.counts() == {"pending": 2, "running": 0, "done": 1, "failed": 0}
        claimed = [queue.claim(), queue.claim()]
        assert sorted(j.request.pr_number for j in claimed if j) == [2, 3]
        key = PrKey("f", "acme", "demo", 2)
        assert history.load(key).reviews == []
        history.set_paused(key, True)
    finally:
        queue.close()
        history.close()
    reopened = PrHistory(str(path))
    try:
        assert reopened.load(PrKey("f", "acme", "demo", 2)).paused
    finally:
        reopened.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == sqlite_db.SCHEMA_VERSION
    db.close()


def test_the_history_is_bounded_and_closed_prs_are_pruned(tmp_path: Path) -> None:
    from auto_review_gateway.core.prstate import ReviewEntry, TrackedFinding

    now = [1000.0]
    history = PrHistory(str(tmp_path / "db"), max_reviews=3, retention=10.0, clock=lambda: now[0])
    key, other = PrKey("f", "o", "r", 1), PrKey("f", "o", "r", 2)
    try:
        for i in range(1, 8):
            history.record(key, ReviewEntry(i, "full", "a", f"{i:040x}"),
                           [TrackedFinding(f"fp{i}", "x.py", i, "low", "r", "m")])  # fmt: skip
        history.record(key, ReviewEntry(7, "full", "a", "b"))  # job 7 again: nothing new
        state = history.load(key)
        assert [r.job_id for r in state.reviews] == [5, 6, 7]
        history.record(other, ReviewEntry(1, "full", "a", "b"))
        history.closed(key)
        now[0] += 11
        assert history.prune() == 1
        assert history.load(key).findings == [] and history.load(other).reviews != []
    finally:
        history.close()


def test_the_model_is_asked_about_the_new_commit_with_the_whole_pr_as_context(
    world: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    pr = Pr(world)
    first = pr.push({"src/one.py": "def one():\n    return 'first change'\n"})
    second = pr.push({"src/two.py": "def two():\n    return 'second change'\n"})
    with FakeOpenAI() as api:
        monkeypatch.setenv("LLM_BASE_URL", api.base_url)
        monkeypatch.setenv("LLM_API_KEY", "k")
        monkeypatch.setenv("LLM_REASONING_MODEL", "gpt-4o-mini")
        for _ in range(2):
            api.script('{"findings": [], "summary": "ok"}')
        pr.review(first)
        pr.review(second)
        asked = [r.json["messages"][-1]["content"] for r in api.requests]
    assert "incremental" not in asked[0] and "first change" in asked[0]
    diff = asked[1].split("BEGIN UNTRUSTED DIFF", 1)[1]
    assert "second change" in diff and "first change" not in diff
    whole = asked[1].split("BEGIN UNTRUSTED PULL REQUEST DIFF", 1)[1].split("END UNTRUSTED", 1)[0]
    assert "first change" in whole and "second change" in whole
    assert f"commit {first[:12]} of this pull request was reviewed before" in asked[1]


def test_a_closed_pr_is_noted_without_a_post_and_forgotten_later(world: dict) -> None:
    forge, pr = world["forge"], Pr(world)
    head = pr.push({"src/a.py": "x = 1   \n"})
    pr.review(head)
    posts = len(forge.requests)
    pr.review(head, reason="pull_request:closed")
    assert len(forge.requests) == posts  # nothing sent to the forge
    history = PrHistory(world["db"], retention=0.0)
    try:
        key = PrKey(forge.url + "/api/v1", "acme", "demo", 5)
        assert history.prune() == 1 and history.load(key).findings == []
    finally:
        history.close()


def test_the_model_reads_the_prs_title_and_description(
    world: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    forge, pr = world["forge"], Pr(world)
    head = pr.push({"src/one.py": "def one():\n    return 1\n"})
    forge.set_pull("acme", "demo", 5, head, title="Make one return one",
                   body="The parser needs a constant; see the design notes.")  # fmt: skip
    with FakeOpenAI() as api:
        monkeypatch.setenv("LLM_BASE_URL", api.base_url)
        monkeypatch.setenv("LLM_API_KEY", "k")
        monkeypatch.setenv("AR_VERIFIER", "off")
        api.script('{"findings": [], "summary": "ok"}')
        pr.review(head)
        [asked] = [r.json["messages"][-1]["content"] for r in api.requests]
    assert "Make one return one" in asked and "see the design notes" in asked


def test_the_walkthrough_carries_the_models_line_for_each_file_and_nothing_else(
    world: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    forge, pr = world["forge"], Pr(world)
    head = pr.push({"src/one.py": "def one():\n    return 1\n", "src/two.py": "X = 2\n"})
    answer = {
        "findings": [],
        "summary": "ok",
        "walkthrough": [
            {"path": "src/one.py", "change": "adds one() | returns 1 @everyone\x1b[31m"},
            {"path": "src/elsewhere.py", "change": "a file this PR does not touch"},
        ],
    }
    with FakeOpenAI() as api:
        monkeypatch.setenv("LLM_BASE_URL", api.base_url)
        monkeypatch.setenv("LLM_API_KEY", "k")
        monkeypatch.setenv("AR_VERIFIER", "off")
        api.script(json.dumps(answer))
        pr.review(head)
    body = summaries(forge)[0]["body"]
    table = body.split("<summary>Walkthrough</summary>", 1)[1].split("</details>", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `src/")]
    assert len(rows) == 2 and "elsewhere" not in table
    one = next(r for r in rows if "one.py" in r)
    assert "adds one" in one and len(re.findall(r"(?<!\\)\|", one)) == 3  # "|" adds no cell
    assert " @everyone" not in one and "\x1b" not in one  # no mention, no escape sequence
    two = next(r for r in rows if "two.py" in r)
    assert two.endswith("| added, +1 -0 |")  # no line from the model: the statistics


# ------------------------------------------------------------------ attacks on the memory


def test_a_fixed_finding_brought_back_is_posted_again_and_fails_the_status(world: dict) -> None:
    forge, pr = world["forge"], Pr(world)
    pr.review(pr.push({"src/a.py": "x = 1\n<<<<<<< HEAD\n"}))
    pr.review(pr.push({"src/a.py": "x = 1\n"}))
    pr.review(pr.push({"src/a.py": "x = 1\n<<<<<<< HEAD\n"}))
    assert final_states(forge) == ["failure", "success", "failure"]
    assert [len(r) for r in inline(forge)] == [1, 1]  # posted again when it came back
    assert [f.state for f in pr.state().findings] == ["open"]


def test_renaming_a_file_does_not_resolve_its_findings(world: dict) -> None:
    forge, pr = world["forge"], Pr(world)
    pr.review(pr.push({"src/old.py": "x = 1\n<<<<<<< HEAD\n"}))
    pr.review(pr.push({"src/old.py": None, "src/new.py": "x = 1\n<<<<<<< HEAD\n"}))
    assert [f.state for f in pr.state().findings] == ["open"]
    assert final_states(forge) == ["failure", "failure"] and len(forge.reviews()) == 1


def test_a_pause_holds_every_review_but_a_commands(world: dict) -> None:
    forge, pr = world["forge"], Pr(world)
    history = PrHistory(world["db"])
    history.set_paused(PrKey(forge.url + "/api/v1", "acme", "demo", 5), True)
    history.close()
    head = pr.push({"src/a.py": "<<<<<<< HEAD\n"})
    for reason in ("reconcile", "ci", "pull_request:opened"):
        pr.review(head, reason=reason)
    assert forge.reviews() == []
    pr.review(head, reason="command:re-review")
    assert len(forge.reviews()) == 1


def test_a_reopened_pr_is_not_forgotten_with_its_first_close(world: dict) -> None:
    pr = Pr(world)
    head = pr.push({"src/a.py": "x = 1   \n"})
    pr.review(head)
    pr.review(head, reason="pull_request:closed")
    pr.review(pr.push({"src/b.py": "y = 1\n"}))  # reopened and pushed to
    history = PrHistory(world["db"], retention=0.0)
    try:
        assert history.prune() == 0
    finally:
        history.close()
    assert pr.state().findings != []


def test_two_jobs_of_one_pr_at_once_post_each_finding_once(world: dict) -> None:
    import threading

    forge, pr = world["forge"], Pr(world)
    head = pr.push({"src/a.py": "<<<<<<< HEAD\n"})
    shared = PrHistory(world["db"])  # one per gateway, as serve opens it
    done: list[int] = []

    def job(n: int) -> None:
        pr.review(head, job_id=n, history=shared)
        done.append(n)

    jobs = [threading.Thread(target=job, args=(n,)) for n in (1, 2)]
    try:
        for thread in jobs:
            thread.start()
        for thread in jobs:
            thread.join(60)
    finally:
        shared.close()
    assert sorted(done) == [1, 2]  # both ran to the end
    assert sum(len(r) for r in inline(forge)) == 1
    assert len(summaries(forge)) == 1 and len(pr.state().reviews) == 2


def test_hostile_file_names_cannot_break_the_summary_or_its_size(world: dict) -> None:
    forge, pr = world["forge"], Pr(world)
    table_breaker = "a|[click me](evil.example) @victim|.py"
    long_names = {f"d/{'n' * 200}/{'m' * 200}/{i:03d}.py": "<<<<<<< HEAD\n" for i in range(120)}
    pr.review(pr.push({table_breaker: "y = 1\n", **long_names}))
    [comment] = summaries(forge)
    assert len(comment["body"]) <= summary.MAX_BODY_CHARS
    row = next(line for line in comment["body"].splitlines() if "click me" in line)
    assert len(re.findall(r"(?<!\\)\|", row)) == 3  # the name stays in its cell


def test_merging_the_base_into_the_pr_does_not_post_the_bases_lines(
    world: dict, tmp_path: Path
) -> None:
    forge, pr = world["forge"], Pr(world)
    pr.review(pr.push({"src/app.py": "def main():\n    return 0\n# the PR's line\n"}))
    # main changes the same file elsewhere, with a debugger call; the PR merges main in
    commit(world["repo"], {"src/app.py": "breakpoint()\ndef main():\n    return 0\n"}, "m",
           branch="main")  # fmt: skip
    env = dict(os.environ, GIT_AUTHOR_NAME="a", GIT_AUTHOR_EMAIL="a@a.invalid",
               GIT_COMMITTER_NAME="a", GIT_COMMITTER_EMAIL="a@a.invalid")  # fmt: skip
    work = tmp_path / "work"
    for args in (["clone", "-q", "-b", "topic", str(world["repo"]), str(work)],
                 ["-C", str(work), "merge", "-q", "--no-edit", "origin/main"],
                 ["-C", str(work), "push", "-q", "origin", "topic"]):  # fmt: skip
        subprocess.run(["git", *args], check=True, env=env)
    merged = subprocess.run(["git", "--git-dir", str(world["repo"]), "rev-parse", "topic"],
                            check=True, capture_output=True, text=True).stdout.strip()  # fmt: skip
    pr.review(merged)
    assert pr.state().reviews[-1].kind == "full"  # a merge since the last review: whole PR
    assert all(rule != "debugger" for review in inline(forge) for _p, _l, rule in review)


def test_resolved_findings_are_kept_bounded(tmp_path: Path) -> None:
    from auto_review_gateway.core.prstate import ReviewEntry, TrackedFinding
    from auto_review_gateway.jobs import history as memory

    history = PrHistory(str(tmp_path / "db"))
    key = PrKey("f", "o", "r", 1)
    try:
        for job in range(1, 4):
            made = [TrackedFinding(f"{job}-{i}", "x.py", i + 1, "low", "r", "m")
                    for i in range(memory.MAX_RESOLVED_KEPT)]  # fmt: skip
            history.record(key, ReviewEntry(job, "full", "a", "b"), made)
            history.record(key, ReviewEntry(100 + job, "full", "b", "c"), [],
                           [t.fingerprint for t in made])  # fmt: skip
        kept = history.load(key).findings
        assert len(kept) == memory.MAX_RESOLVED_KEPT and {f.job_id for f in kept} == {3}
    finally:
        history.close()
