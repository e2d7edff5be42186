"""`auto-review serve` through the real single file and real runc: signed webhooks in,
reviews and commit statuses out to a loopback Forgejo stand-in (a real forge cannot be
reached from here), repositories cloned from the loopback TLS git server; durability
across a SIGKILL of the sandbox; a burst of 200 webhooks."""

from __future__ import annotations

import concurrent.futures
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import needs_root
from fake_forgejo import BOT_LOGIN, FakeForgejo
from gitserver import GitHttpsServer, commit, make_ca, make_repo
from sandboxrun import Serving

pytestmark = needs_root
SECRET = "webhook-secret-for-tests"
TOKEN = "forge-token-for-tests"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    base = Path("/tmp") / f"ar-serve-{os.getpid()}"
    base.mkdir(mode=0o755)
    certs = make_ca(base / "certs")
    repos = base / "repos"
    make_repo(repos / "demo.git", {"app.py": "x = 1\n"}, "base")
    heads = []
    for i in range(8):  # one topic branch per pull request
        branch = f"topic{i}"
        subprocess.run(
            ["git", "--git-dir", str(repos / "demo.git"), "branch", branch, "main"], check=True
        )
        heads.append(commit(repos / "demo.git", {"app.py": f"x = {i}   \n"}, branch, branch=branch))
    subprocess.run(["chmod", "-R", "a+rX", str(base)], check=True)
    home = tmp_path_factory.mktemp("serve-home")
    with GitHttpsServer(repos, certs) as git, FakeForgejo(token=TOKEN) as forge:
        yield {"git": git, "forge": forge, "heads": heads, "home": home, "ca": certs.ca_cert}
    shutil.rmtree(base, ignore_errors=True)


class Gateway(Serving):
    """`auto-review serve` started through the launcher, as a service manager would."""

    def __init__(self, app: Path, world: dict, **extra: str) -> None:
        self.port = free_port()
        home = world["home"]
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(home),
            "AUTO_REVIEW_CACHE_DIR": str(home / "cache"),
            "AUTO_REVIEW_STATE_DIR": str(home / "state"),
            "AUTO_REVIEW_CA_FILE": str(world["ca"]),
            "AR_GATEWAY_BIND": f"127.0.0.1:{self.port}",
            "WEBHOOK_SECRET": SECRET,
            "FORGEJO_BASE_URL": world["forge"].url,
            "AR_FORGEJO_TOKEN": TOKEN,
            # the forge and git stand-ins listen on this host's loopback: the documented
            # setting for services on the same host (test_sandbox_network covers isolated)
            "AUTO_REVIEW_NETWORK": "host",
            **extra,
        }
        super().__init__(app, env)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def pr_event(world: dict, number: int, head: str) -> dict:
    return {
        "action": "opened",
        "number": number,
        "pull_request": {
            "number": number,
            "draft": False,
            "head": {"sha": head, "ref": f"topic{number}"},
            "base": {"ref": "main"},
        },
        "repository": {
            "name": "demo",
            "full_name": "acme/demo",
            "owner": {"login": "acme", "username": "acme"},
            "clone_url": world["git"].repo_url("demo"),
        },
    }


def deliver(
    gw: Gateway, event: dict, secret: str = SECRET, kind: str = "pull_request"
) -> tuple[int, dict]:
    body = json.dumps(event).encode()
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    request = urllib.request.Request(
        gw.url("/webhooks/forgejo"),
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "X-Forgejo-Event": kind,
            "X-Forgejo-Delivery": str(uuid.uuid4()),
            "X-Forgejo-Signature": signature,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def final_states(forge: FakeForgejo) -> dict[str, list[str]]:
    """head sha -> the states posted for it, in order."""
    out: dict[str, list[str]] = {}
    for r in forge.of_kind("status"):
        out.setdefault(r.path.rsplit("/", 1)[-1], []).append(r.json["state"])
    return out


def wait_for(predicate, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_a_signed_webhook_gets_a_review_and_statuses(app: Path, world: dict) -> None:
    forge: FakeForgejo = world["forge"]
    forge.requests.clear()
    gw = Gateway(app, world)
    try:
        head = world["heads"][0]
        status, answer = deliver(gw, pr_event(world, 100, head))
        assert status == 202, answer
        wait_for(lambda: final_states(forge).get(head, [])[-1:] in (["success"], ["failure"]))
        assert final_states(forge)[head] == ["pending", "success"]  # trailing space: low
        [review] = forge.posted("/pulls/100/reviews")
        assert review[1]["commit_id"] == head
        bad, _ = deliver(gw, pr_event(world, 1, world["heads"][1]), secret="wrong")
        assert bad == 401
        with urllib.request.urlopen(gw.url("/info"), timeout=10) as response:
            info = json.loads(response.read())
        assert info["isolation"] == "runc" and info["bundle_digest"].startswith("sha256:")
    finally:
        assert gw.stop() in (0, 143)


def test_accepted_jobs_survive_a_sigkill_of_the_sandbox(app: Path, world: dict) -> None:
    forge: FakeForgejo = world["forge"]
    forge.requests.clear()
    gw = Gateway(app, world, AR_REVIEW_CONCURRENCY="1")
    heads = world["heads"][1:8]
    for number, head in enumerate(heads, start=1):
        status, answer = deliver(gw, pr_event(world, number, head))
        assert status == 202, answer
    # kill the runtime and everything in the container, as the OOM killer would
    for pid in [
        int(p) for p in Path(f"/proc/{gw.proc.pid}/task/{gw.proc.pid}/children").read_text().split()
    ]:
        os.kill(pid, signal.SIGKILL)
    gw.proc.wait(timeout=30)
    done_before = {h for h, s in final_states(forge).items() if s[-1] in ("success", "failure")}
    assert len(done_before) < len(heads), "the kill came too late to test anything"
    gw = Gateway(app, world, AR_REVIEW_CONCURRENCY="2")
    try:
        wait_for(
            lambda: all(
                final_states(forge).get(h, ["?"])[-1] in ("success", "failure") for h in heads
            )
        )
    finally:
        gw.stop()
    reviews = [path for path, _body in forge.posted("/reviews")]
    for number in range(1, 8):
        assert reviews.count(f"/api/v1/repos/acme/demo/pulls/{number}/reviews") == 1, number


def test_a_burst_of_200_webhooks(app: Path, world: dict) -> None:
    gw = Gateway(app, world, AR_QUEUE_MAX="500", AR_REVIEW_CONCURRENCY="2")
    try:
        events = [pr_event(world, 1000 + i, f"{i:040x}") for i in range(200)]
        for e in events:  # jobs fail fast: nothing to clone
            e["repository"]["clone_url"] = "https://127.0.0.1:1/none.git"
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            results = list(pool.map(lambda e: deliver(gw, e)[0], events))
        elapsed = time.monotonic() - started
        assert set(results) <= {202, 503}, results
        accepted = results.count(202)
        print(
            f"\nburst: {accepted} accepted of 200 in {elapsed:.2f} s = {accepted / elapsed:.0f}/s"
        )
        assert accepted >= 100
        with urllib.request.urlopen(gw.url("/metrics"), timeout=10) as response:
            metrics = response.read().decode()
        assert 'auto_review_webhooks_total{event="pull_request"}' in metrics
    finally:
        assert gw.stop() in (0, 143)


def test_an_http_forge_works_end_to_end(app: Path, world: dict, tmp_path: Path) -> None:
    # A forge on plain HTTP that also serves the repository (token required), as a
    # Forgejo on a private network does; the webhook's clone URL names Forgejo's
    # ROOT_URL, another host name: the gateway fetches from FORGEJO_BASE_URL.
    root = tmp_path / "forge-repos"
    (root / "acme").mkdir(parents=True)
    (root / "acme" / "demo.git").symlink_to(world["git"].repos_root / "demo.git")
    head = world["heads"][2]
    with FakeForgejo(token=TOKEN, git_root=root) as forge:
        assert forge.url.startswith("http://")
        state = tmp_path / "state"  # a queue of its own (the burst's retries fill the shared one)
        gw = Gateway(app, world, FORGEJO_BASE_URL=forge.url, AUTO_REVIEW_STATE_DIR=str(state))
        try:
            event = pr_event(world, 200, head)
            event["repository"]["clone_url"] = "https://forge.example.invalid/acme/demo.git"
            status, answer = deliver(gw, event)
            assert status == 202, answer
            wait_for(lambda: final_states(forge).get(head, [])[-1:] in (["success"], ["failure"]))
            assert final_states(forge)[head] == ["pending", "success"]
            fetches = [r for r in forge.requests if r.kind == "git"]
            assert fetches and all(
                r.headers.get("authorization") == f"token {TOKEN}" for r in fetches
            )
            [review] = forge.posted("/pulls/200/reviews")
            assert review[1]["commit_id"] == head
        finally:
            assert gw.stop() in (0, 143)
        assert "FORGEJO_BASE_URL is http://" in "".join(gw.errors)


def test_a_pr_followed_across_a_restart_one_summary_no_repeats(
    app: Path, world: dict, tmp_path: Path
) -> None:
    """Two pushes to one PR with a gateway restart between them: the second review is
    incremental (the history survived in the state dir), posts only its own finding,
    and edits the one summary comment the first review created."""
    forge: FakeForgejo = world["forge"]
    repo = world["git"].repos_root / "demo.git"
    subprocess.run(["git", "--git-dir", str(repo), "branch", "follow", "main"], check=True)
    first = commit(repo, {"one.py": "a = 1   \n"}, "one", branch="follow")
    second = commit(repo, {"two.py": "<<<<<<< HEAD\n"}, "two", branch="follow")
    subprocess.run(["chmod", "-R", "a+rX", str(repo)], check=True)
    state = tmp_path / "state"
    for head, action in ((first, "opened"), (second, "synchronized")):
        gw = Gateway(app, world, AUTO_REVIEW_STATE_DIR=str(state))
        try:
            event = pr_event(world, 300, head)
            event["action"] = action
            status, answer = deliver(gw, event)
            assert status == 202, answer
            wait_for(
                lambda h=head: final_states(forge).get(h, [])[-1:] in (["success"], ["failure"])
            )
        finally:
            assert gw.stop() in (0, 143)
    reviews = [body for _path, body in forge.posted("/pulls/300/reviews")]
    assert [[c["path"] for c in r["comments"]] for r in reviews] == [["one.py"], ["two.py"]]
    [summary] = forge.comments.on("acme", "demo", 300)
    assert forge.comments.edits[summary["id"]] == 1
    assert (
        "(incremental)" in summary["body"] and f"{first[:12]}`..`{second[:12]}" in summary["body"]
    )
    assert final_states(forge)[second] == ["pending", "failure"]


def comment_event(number: int, body: str, author: str = "alice") -> dict:
    """A pull_request_comment delivery (X-Forgejo-Event issue_comment), as Forgejo sends."""
    return {
        "action": "created",
        "is_pull": True,
        "issue": {"number": number, "state": "open", "pull_request": {"merged": False}},
        "comment": {"id": 1, "body": body, "user": {"login": author, "username": author}},
        "repository": {
            "name": "demo",
            "full_name": "acme/demo",
            "owner": {"login": "acme", "username": "acme"},
        },
    }


def job_state(gw: Gateway, job_id: int) -> str | None:
    with urllib.request.urlopen(gw.url("/jobs"), timeout=10) as response:
        jobs = json.loads(response.read())["jobs"]
    return next((j["state"] for j in jobs if j["id"] == job_id), None)


def test_pause_holds_reviews_and_resume_brings_them_back(
    app: Path, world: dict, tmp_path: Path
) -> None:
    forge: FakeForgejo = world["forge"]
    forge.requests.clear()
    forge.set_permission("acme", "demo", BOT_LOGIN, "admin")
    forge.set_permission("acme", "demo", "alice", "write")
    first, second = world["heads"][3], world["heads"][4]
    forge.set_pull("acme", "demo", 301, first, clone_url=world["git"].repo_url("demo"))
    # a queue of its own (the burst's retries fill the shared one)
    gw = Gateway(app, world, AUTO_REVIEW_STATE_DIR=str(tmp_path / "state"))
    try:

        def command(body: str) -> str:
            replies = len(forge.comments.on("acme", "demo", 301))
            status, answer = deliver(gw, comment_event(301, body), kind="issue_comment")
            assert status == 202, answer
            wait_for(lambda: len(forge.comments.on("acme", "demo", 301)) > replies)
            return forge.comments.on("acme", "demo", 301)[-1]["body"]

        assert "Paused" in command("@auto-review pause")
        status, answer = deliver(gw, pr_event(world, 301, first))
        assert status == 202, answer
        wait_for(lambda: job_state(gw, answer["job_id"]) == "done")
        assert final_states(forge)[first] == ["pending", "success"]  # paused: says so
        [said] = [r.json["description"] for r in forge.of_kind("status") if first in r.path][1:]
        assert "paused" in said and not forge.posted("/pulls/301/reviews")
        assert "Resumed" in command("@auto-review resume")
        forge.set_pull("acme", "demo", 301, second, clone_url=world["git"].repo_url("demo"))
        status, answer = deliver(gw, pr_event(world, 301, second))
        assert status == 202, answer
        wait_for(lambda: final_states(forge).get(second, [])[-1:] in (["success"], ["failure"]))
        assert final_states(forge)[second] == ["pending", "success"]
    finally:
        assert gw.stop() in (0, 143)
