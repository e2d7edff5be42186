"""`serve`: the gateway's HTTP server, run bare on the host as a subprocess
(``python -m auto_review_gateway serve``) against the loopback Forgejo stand-in, with the
real SQLite job queue and the production worker. Jobs are pointed at a repository URL
nobody listens on, so they fail fast; the sandboxed end-to-end review is in
test_serve_sandbox.py.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import hmac
import http.client
import json
import os
import queue
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from changes import wait_until
from fake_forgejo import BOT_LOGIN, FakeForgejo

GATEWAY = Path(__file__).resolve().parent.parent / "payload" / "gateway"
sys.path.insert(0, str(GATEWAY))

from auto_review_gateway import __version__  # noqa: E402

SECRET = "whsec-3f9a1c7e5b2d4086a1f3c5e7d9b1a3c5"
TOKEN = "forge-token-8c1e4a7f2b9d6e3c0a5f8b1d4e7a2c9f"
CI_TOKEN = "ci-token-0123456789abcdef0123456789abcdef"
SECRETS = (SECRET, TOKEN, CI_TOKEN)
NOWHERE = "http://127.0.0.1:9/acme/demo.git"  # the discard port: a clone fails at once
REQUEST_TIMEOUT = 1.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """One `serve` process; waits for its "serving on" line."""

    def __init__(self, state: Path, forge_url: str, *, command: str = "serve", **env: str):
        self.state = state
        full_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(state),
            "LANG": "C.UTF-8",
            "AR_GATEWAY_BIND": "127.0.0.1:0",
            "AUTO_REVIEW_STATE_DIR_INSIDE": str(state),
            "WEBHOOK_SECRET": SECRET,
            "FORGEJO_BASE_URL": forge_url,
            "AR_FORGEJO_TOKEN": TOKEN,
            "AR_REQUEST_TIMEOUT": str(REQUEST_TIMEOUT),
            **env,
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "auto_review_gateway", command],
            cwd=GATEWAY,
            env={k: v for k, v in full_env.items() if v is not None},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._stderr: list[str] = []
        self._stdout: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._drain_err, daemon=True).start()
        threading.Thread(target=self._drain_out, daemon=True).start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                line = self._stdout.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None:
                    time.sleep(0.2)
                    raise AssertionError(
                        f"serve exited {self.proc.returncode}: {self.stderr}"
                    ) from None
                continue
            match = re.fullmatch(r"auto-review: serving on http://(.+):(\d+)\n", line)
            if match:
                self.host, self.port = match.group(1), int(match.group(2))
                return
        raise AssertionError(f"serve never said it was serving: {self.stderr}")

    def _drain_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line)

    def _drain_out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._stdout.put(line)

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict | None = None,
        timeout: float = 30,
    ) -> tuple[int, dict[str, str], Any]:
        """(status, headers, parsed JSON or text) of one request."""
        host = self.host.strip("[]")
        conn = http.client.HTTPConnection(host, self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            raw = response.read()
            answer_headers = {k.lower(): v for k, v in response.getheaders()}
        finally:
            conn.close()
        if raw and answer_headers.get("content-type", "").startswith("application/json"):
            return response.status, answer_headers, json.loads(raw)
        return response.status, answer_headers, raw.decode()

    def get(self, path: str) -> tuple[int, Any]:
        status, _headers, body = self.request("GET", path)
        return status, body

    def metric(self, name: str, labels: str = "") -> float:
        _status, text = self.get("/metrics")
        match = re.search(rf"^auto_review_{name}{re.escape(labels)} (\S+)$", text, re.M)
        return float(match.group(1)) if match else 0.0

    def jobs(self) -> dict[int, dict[str, Any]]:
        """The rows of the job database, by id."""
        db = sqlite3.connect(self.state / "jobs.sqlite3", timeout=10)
        try:
            db.row_factory = sqlite3.Row
            return {r["id"]: dict(r) for r in db.execute("SELECT * FROM jobs")}
        finally:
            db.close()

    def stop(self, timeout: float = 10) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


def wait_for(predicate: Any, gw: Served, forge: FakeForgejo, timeout: float = 30) -> None:
    """Until ``predicate`` holds, re-checked whenever the gateway's state dir (its job
    database) changes or the forge is asked something; fail after ``timeout`` s."""
    wait_until(predicate, dirs=[gw.state], change_fds=[forge.changed_fd], timeout=timeout)


# --------------------------------------------------------------------------- payloads


def sha(seed: object) -> str:
    return hashlib.sha1(str(seed).encode()).hexdigest()


def sign(body: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def repository() -> dict[str, Any]:
    return {
        "id": 12,
        "owner": {"id": 3, "login": "acme", "username": "acme", "full_name": ""},
        "name": "demo",
        "full_name": "acme/demo",
        "private": False,
        "html_url": "http://forge.invalid/acme/demo",
        "clone_url": NOWHERE,
        "ssh_url": "git@forge.invalid:acme/demo.git",
        "default_branch": "main",
    }


def pr_event(number: int, head: str, action: str = "opened", draft: bool = False) -> dict:
    """A pull_request payload shaped like Forgejo's."""
    return {
        "action": action,
        "number": number,
        "pull_request": {
            "id": 1000 + number,
            "number": number,
            "title": "Add a thing",
            "body": "",
            "state": "open",
            "draft": draft,
            "merged": False,
            "head": {"label": "topic", "ref": "topic", "sha": head, "repo_id": 12},
            "base": {"label": "main", "ref": "main", "sha": sha("base"), "repo_id": 12},
        },
        "repository": repository(),
        "sender": {"id": 4, "login": "alice", "username": "alice"},
    }


def comment_event(number: int, body: str, on_pull: bool = True, author: str = "alice") -> dict:
    """An issue_comment payload shaped like Forgejo's."""
    return {
        "action": "created",
        "issue": {
            "id": 2000 + number,
            "number": number,
            "title": "Add a thing",
            "state": "open",
            "pull_request": {"merged": False, "merged_at": None} if on_pull else None,
        },
        "comment": {"id": 77, "body": body, "user": {"login": author, "username": author}},
        "repository": repository(),
        "sender": {"id": 4, "login": "alice", "username": "alice"},
        "is_pull": on_pull,
    }


def deliver(
    gw: Served,
    event: str,
    payload: Any,
    *,
    delivery: str | None = None,
    secret: str | None = SECRET,
    gitea: bool = False,
    event_type: str | None = None,
    timeout: float = 30,
) -> tuple[int, dict[str, str], Any]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    prefix = "X-Gitea-" if gitea else "X-Forgejo-"
    headers = {
        "Content-Type": "application/json",
        prefix + "Event": event,
        prefix + "Delivery": delivery or str(uuid.uuid4()),
    }
    if event_type is not None:
        headers[prefix + "Event-Type"] = event_type
    if secret is not None:
        headers[prefix + "Signature"] = sign(body, secret)
    return gw.request("POST", "/webhooks/forgejo", body, headers, timeout=timeout)


def ci(gw: Served, doc: Any, token: str | None = CI_TOKEN) -> tuple[int, dict[str, str], Any]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return gw.request("POST", "/reviews/ci", json.dumps(doc).encode(), headers)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def forge() -> Iterator[FakeForgejo]:
    with FakeForgejo(token=TOKEN) as server:
        yield server


@pytest.fixture(scope="module")
def gw(forge: FakeForgejo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The shared gateway: CI endpoint on, 1 s request timeout, one worker."""
    served = Served(
        tmp_path_factory.mktemp("state"),
        forge.url,
        AR_CI_REVIEW_TOKEN=CI_TOKEN,
        AR_REVIEW_CONCURRENCY="1",
        AUTO_REVIEW_BUNDLE_DIGEST="sha256:" + "ab" * 32,
        AUTO_REVIEW_ISOLATION="runc",
    )
    yield served
    status = served.stop()
    assert status == 0, served.stderr


# --------------------------------------------------------------------------- read-only


def test_health_version_info_and_metrics(gw: Served) -> None:
    assert gw.get("/healthz") == (200, {"status": "ok"})
    assert gw.get("/version") == (200, {"version": __version__})
    status, info = gw.get("/info")
    assert status == 200
    assert info["version"] == __version__
    assert info["bundle_digest"] == "sha256:" + "ab" * 32
    assert info["isolation"] == "runc"
    assert set(info["queue"]) >= {"pending", "running", "done", "failed"}
    status, headers, text = gw.request("GET", "/metrics")
    assert status == 200
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    for name in ("webhooks_total", "signature_failures_total", "duplicates_total", "queue_depth"):
        assert f"# TYPE auto_review_{name} " in text
    assert re.search(r"^auto_review_queue_depth \d+$", text, re.M)


def test_unknown_paths_and_methods(gw: Served) -> None:
    status, _h, body = gw.request("GET", "/nope")
    assert (status, body) == (404, {"error": "not found"})
    status, headers, body = gw.request("POST", "/healthz", b"{}")
    assert status == 405 and headers["allow"] == "GET"
    status, headers, _body = gw.request("GET", "/webhooks/forgejo")
    assert status == 405 and headers["allow"] == "POST"
    status, _h, _body = gw.request("DELETE", "/info")
    assert status == 405
    status, headers, body = gw.request("HEAD", "/healthz")
    assert status == 200 and body == "" and headers["content-length"] == "16"
    status, _h, body = gw.request("BREW", "/healthz")
    assert status == 501 and body == {"error": "not implemented"}
    assert gw.get("/healthz")[0] == 200


def test_readyz_probes_the_forge_and_caches_the_answer(gw: Served, forge: FakeForgejo) -> None:
    before = len(forge.of_kind("version"))
    for _ in range(3):
        assert gw.get("/readyz") == (200, {"status": "ready"})
    assert len(forge.of_kind("version")) - before <= 1  # cached for a few seconds


def test_readyz_503_when_the_forge_is_down_and_ci_disabled(tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    gw = Served(tmp_path, down)  # no AR_CI_REVIEW_TOKEN
    try:
        status, headers, body = gw.request("GET", "/readyz")
        assert status == 503 and headers["retry-after"] == "5"
        assert body["status"] == "not ready"
        assert "/api/v1/version" in body["reason"] and TOKEN not in json.dumps(body)
        status, _h, body = ci(gw, {"owner": "acme"})
        assert status == 404 and "disabled" in body["error"]
        assert gw.get("/healthz")[0] == 200  # alive, just not ready
    finally:
        assert gw.stop() == 0


# --------------------------------------------------------------------------- webhooks


def test_signed_pull_request_is_accepted_and_stored(gw: Served) -> None:
    head, delivery = sha("opened-1"), str(uuid.uuid4())
    count = gw.metric("webhooks_total", '{event="pull_request"}')
    status, _h, body = deliver(gw, "pull_request", pr_event(1, head), delivery=delivery)
    assert status == 202, body
    job = gw.jobs()[body["job_id"]]
    assert {k: job[k] for k in ("owner", "repo", "pr_number", "head_sha", "base_ref")} == {
        "owner": "acme",
        "repo": "demo",
        "pr_number": 1,
        "head_sha": head,
        "base_ref": "main",
    }
    assert job["clone_url"] == NOWHERE
    assert job["reason"] == "pull_request:opened"
    assert job["delivery_id"] == delivery and job["force"] == 0
    assert gw.metric("webhooks_total", '{event="pull_request"}') == count + 1


def test_gitea_headers_and_every_reviewed_action(gw: Served) -> None:
    for i, action in enumerate(("synchronized", "reopened", "ready_for_review")):
        event = pr_event(10 + i, sha(f"action-{action}"), action=action)
        status, _h, body = deliver(gw, "pull_request", event, gitea=True)
        assert status == 202, (action, body)
        assert gw.jobs()[body["job_id"]]["reason"] == f"pull_request:{action}"


def test_replayed_delivery_and_same_head_are_duplicates(gw: Served) -> None:
    head, delivery = sha("replay"), str(uuid.uuid4())
    event = pr_event(2, head)
    status, _h, first = deliver(gw, "pull_request", event, delivery=delivery)
    assert status == 202
    jobs_before = len(gw.jobs())
    dups = gw.metric("duplicates_total")
    status, _h, body = deliver(gw, "pull_request", event, delivery=delivery)
    assert (status, body) == (200, {"duplicate": True, "job_id": first["job_id"]})
    # the same head again under a new delivery (e.g. "synchronized" after "opened")
    status, _h, body = deliver(gw, "pull_request", pr_event(2, head, "synchronized"))
    assert status == 200 and body["duplicate"] is True
    assert len(gw.jobs()) == jobs_before
    assert gw.metric("duplicates_total") == dups + 2


def test_bad_or_missing_signature_is_401_and_nothing_is_queued(gw: Served) -> None:
    failures = gw.metric("signature_failures_total")
    jobs_before = len(gw.jobs())
    event = pr_event(3, sha("unsigned"))
    body = json.dumps(event).encode()
    cases = [
        deliver(gw, "pull_request", event, secret="not-the-secret"),
        deliver(gw, "pull_request", event, secret=None),
        deliver(gw, "ping", {}, secret=None),  # even a ping must be signed
        gw.request(
            "POST",
            "/webhooks/forgejo",
            body,
            {"X-Forgejo-Event": "pull_request", "X-Forgejo-Signature": "é" + sign(body)[1:]},
        ),
        # a signature of another body
        gw.request(
            "POST",
            "/webhooks/forgejo",
            body + b" ",
            {"X-Forgejo-Event": "pull_request", "X-Forgejo-Signature": sign(body)},
        ),
    ]
    for status, _headers, answer in cases:
        assert (status, answer) == (401, {"error": "missing or invalid signature"})
    assert len(gw.jobs()) == jobs_before
    assert gw.metric("signature_failures_total") == failures + len(cases)


def test_ping_push_and_other_events_are_answered_not_queued(gw: Served) -> None:
    jobs_before = len(gw.jobs())
    assert deliver(gw, "ping", {"hook_id": 1})[::2] == (200, {"pong": True})
    # Forgejo's "Test Delivery" button sends a push event with a dummy commit
    push = {"ref": "refs/heads/main", "after": sha("push"), "commits": [], "repository": {}}
    status, _h, body = deliver(gw, "push", push)
    assert status == 200 and "push" in body["ignored"]
    status, _h, body = deliver(gw, "release", {"action": "published"})
    assert status == 200 and "ignored" in body
    status, _h, body = deliver(gw, "some_new_event", {})
    assert status == 200 and body == {"ignored": "event other does not trigger reviews"}
    for action in ("edited", "label_updated", "review_requested"):
        status, _h, body = deliver(gw, "pull_request", pr_event(4, sha(action), action=action))
        assert status == 200 and action in body["ignored"]
    status, _h, body = deliver(gw, "pull_request", pr_event(4, sha("draft"), draft=True))
    assert (status, body) == (200, {"ignored": "draft pull request"})
    assert len(gw.jobs()) == jobs_before
    # a draft that becomes ready is reviewed
    ready = pr_event(4, sha("draft"), action="ready_for_review", draft=False)
    assert deliver(gw, "pull_request", ready)[0] == 202
    assert gw.metric("webhooks_total", '{event="other"}') >= 1


def test_malformed_payloads_are_400(gw: Served) -> None:
    jobs_before = len(gw.jobs())
    for raw in (b"{not json", b"[1, 2]", b"\xff\xfe", b"[" * 100_000):
        status, _h, body = deliver(gw, "pull_request", raw)
        assert status == 400, (raw[:10], body)
    broken = pr_event(5, sha("broken"))
    del broken["pull_request"]["head"]["sha"]
    status, _h, body = deliver(gw, "pull_request", broken)
    assert status == 400 and "head.sha" in body["error"]
    broken = pr_event(5, "not-a-sha")
    assert deliver(gw, "pull_request", broken)[0] == 400
    status, _h, body = gw.request(
        "POST", "/webhooks/forgejo", b"{}", {"X-Forgejo-Signature": sign(b"{}")}
    )
    assert status == 400 and "Event" in body["error"]
    assert len(gw.jobs()) == jobs_before
    assert gw.get("/healthz")[0] == 200


def test_form_encoded_payload_is_read(gw: Served) -> None:
    import urllib.parse

    payload = json.dumps(pr_event(6, sha("form"))).encode()
    body = urllib.parse.urlencode({"payload": payload}).encode()
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Forgejo-Event": "pull_request",
        "X-Forgejo-Delivery": str(uuid.uuid4()),
    }
    # the forge signs the JSON in the payload field, not the form encoding
    status, _h, answer = gw.request(
        "POST", "/webhooks/forgejo", body, {**headers, "X-Forgejo-Signature": sign(body)}
    )
    assert status == 401
    status, _h, answer = gw.request(
        "POST", "/webhooks/forgejo", body, {**headers, "X-Forgejo-Signature": sign(payload)}
    )
    assert status == 202, answer


def test_re_review_comment_forces_a_review_of_the_current_head(
    gw: Served, forge: FakeForgejo
) -> None:
    head = sha("comment-head")
    forge.set_pull("acme", "demo", 7, head, base_ref="develop")
    forge.set_permission("acme", "demo", BOT_LOGIN, "admin")
    forge.set_permission("acme", "demo", "alice", "write")
    assert deliver(gw, "pull_request", pr_event(7, head))[0] == 202
    status, _h, body = deliver(gw, "issue_comment", comment_event(7, "@auto-review re-review"))
    assert status == 202, body
    job_id = body["job_id"]
    job = gw.jobs()[job_id]
    # Queued before any forge call: the worker reads the current head when it runs.
    assert (job["head_sha"], job["base_ref"], job["force"]) == ("", "", 1)
    assert job["reason"] == "command:re-review:alice"
    # the worker reads the head from the forge (a job already "running" may not have yet)
    wait_for(
        lambda: any(
            r.kind == "pull" and r.path.endswith("/acme/demo/pulls/7") for r in forge.requests
        ),
        gw,
        forge,
    )
    # ... and reviews that head: its statuses come from both jobs (pending, error each).
    wait_for(lambda: sum(head in r.path for r in forge.of_kind("status")) == 4, gw, forge)
    ignored = [
        comment_event(7, "looks good to me"),
        comment_event(7, "@auto-review-bot re-review"),  # another user
        comment_event(7, "thanks @auto-review"),
        comment_event(7, "> @auto-review re-review"),
        comment_event(7, "@auto-review re-review", author="auto-review"),  # the bot itself
        comment_event(7, "@auto-review re-review", author="../etc"),  # no user name
        comment_event(7, "@auto-review re-review", on_pull=False),
        {**comment_event(7, "@auto-review re-review"), "action": "edited"},
    ]
    for event in ignored:
        status, _h, body = deliver(gw, "issue_comment", event)
        assert status == 200 and "ignored" in body, body
    # An unknown PR is found out by the worker, not while Forgejo waits for the answer.
    status, _h, body = deliver(gw, "issue_comment", comment_event(404, "@auto-review re-review"))
    assert status == 202
    job_id = body["job_id"]
    wait_for(lambda: gw.jobs()[job_id]["state"] == "failed", gw, forge)
    assert "HTTP 404" in gw.jobs()[job_id]["error"] and gw.jobs()[job_id]["attempts"] == 1


def test_commands_are_answered_and_pause_holds_automatic_reviews(
    gw: Served, forge: FakeForgejo
) -> None:
    forge.set_permission("acme", "demo", BOT_LOGIN, "admin")
    forge.set_permission("acme", "demo", "alice", "write")
    forge.set_permission("acme", "demo", "mallory", "read")
    heads = [sha("cmd-head-1"), sha("cmd-head-2")]
    forge.set_pull("acme", "demo", 40, heads[0], clone_url=NOWHERE)

    def command(body: str, author: str = "alice") -> int:
        status, _h, answer = deliver(gw, "issue_comment", comment_event(40, body, author=author))
        assert status == 202, answer
        job_id = answer["job_id"]
        wait_for(lambda: gw.jobs()[job_id]["state"] in ("done", "failed"), gw, forge)
        assert gw.jobs()[job_id]["state"] == "done", gw.jobs()[job_id]
        return len(replies())

    def replies() -> list[str]:  # the replies to commands (the summary is not one)
        bodies = [c["body"] for c in forge.comments.on("acme", "demo", 40)]
        return [b for b in bodies if b.startswith("@")]

    def last() -> str:
        return replies()[-1]

    assert command("@auto-review help") == 1 and "`@auto-review pause`" in last()
    assert command("@auto-review pause", author="mallory") == 2
    assert last().startswith("@mallory: only people who may write") and "\n" not in last()
    assert command("@auto-review pause", author="mallory") == 2  # rate-limited: no reply
    assert command("@auto-review dance") == 3 and "`@auto-review help`" in last()
    assert command("@auto-review pause") == 4 and "Paused" in last()
    push = deliver(gw, "pull_request", pr_event(40, heads[0]))[2]["job_id"]
    wait_for(lambda: gw.jobs()[push]["state"] == "done", gw, forge)
    paused = [r.json for r in forge.of_kind("status") if heads[0] in r.path]
    assert [s["state"] for s in paused] == ["pending", "success"], paused  # not reviewed
    assert "paused" in paused[-1]["description"] and not forge.posted("/pulls/40/reviews")
    assert command("@auto-review resume") == 5 and "Resumed" in last()
    forge.set_pull("acme", "demo", 40, heads[1], clone_url=NOWHERE)
    deliver(gw, "pull_request", pr_event(40, heads[1], action="synchronized"))
    wait_for(lambda: any(heads[1] in r.path for r in forge.of_kind("status")), gw, forge)


def test_a_slow_forge_does_not_slow_the_webhook_answer(gw: Served, forge: FakeForgejo) -> None:
    forge.set_pull("acme", "demo", 31, sha("slow-head"))
    forge.hold("pull")  # the forge answers no PR lookup until released
    try:
        status, _h, body = deliver(
            gw, "issue_comment", comment_event(31, "@auto-review re-review"), timeout=2
        )
        assert status == 202, body
        assert forge.wait_held("pull")  # the worker is the one waiting for the forge
    finally:
        forge.release("pull")


def test_the_readme_names_the_forgejo_events_that_reach_the_gateway(gw: Served) -> None:
    # Forgejo's webhook form has one checkbox per event type (modules/webhook/type.go);
    # X-Forgejo-Event carries the family, X-Forgejo-Event-Type the type.
    readme = (GATEWAY.parent.parent / "README.md").read_text()
    step = readme[readme.index("**Register the webhook**") :]
    step = step[: step.index("\n4. ")]
    for label in ("*Pull request*", "*Pull request synchronized*", "*Pull request comment*"):
        assert label in step, label
    for event_type in ("pull_request", "pull_request_sync", "pull_request_comment"):
        assert f"`{event_type}`" in step, event_type
    # comments on a PR are pull_request_comment, not issue_comment
    assert "and *Issue comment*" not in step and "*Issue comment* is not needed" in step
    sync = pr_event(32, sha("sync-head"), action="synchronized")
    assert deliver(gw, "pull_request", sync, event_type="pull_request_sync")[0] == 202
    comment = comment_event(32, "@auto-review re-review")
    assert deliver(gw, "issue_comment", comment, event_type="pull_request_comment")[0] == 202


def test_a_draft_that_becomes_ready_by_losing_wip_is_reviewed(gw: Served) -> None:
    head = sha("wip-head")
    wip = pr_event(33, head)
    wip["pull_request"]["title"] = "WIP: Add a thing"
    status, _h, body = deliver(gw, "pull_request", wip)
    assert (status, body) == (200, {"ignored": "draft pull request"})
    # Still a draft after the edit: ignored.
    edited = pr_event(33, head, action="edited")
    edited["pull_request"]["title"] = "[wip] Add a thing"
    edited["changes"] = {"title": {"from": "WIP: Add a thing"}}
    assert "ignored" in deliver(gw, "pull_request", edited)[2]
    # The prefix removed: Forgejo sends "edited" with the old title, and that is reviewed.
    edited["pull_request"]["title"] = "Add a thing"
    status, _h, body = deliver(gw, "pull_request", edited)
    assert status == 202, body
    assert gw.jobs()[body["job_id"]]["reason"] == "pull_request:ready_for_review"
    # A body edit of a ready PR is not a new review.
    body_edit = pr_event(33, sha("other"), action="edited")
    body_edit["changes"] = {"body": {"from": "old"}}
    assert "ignored" in deliver(gw, "pull_request", body_edit)[2]


def test_oversized_body_is_413_without_reading_it(gw: Served) -> None:
    with socket.create_connection((gw.host, gw.port), timeout=5) as s:
        s.sendall(
            b"POST /webhooks/forgejo HTTP/1.1\r\nHost: x\r\nX-Forgejo-Event: push\r\n"
            b"Content-Length: 5000000\r\n\r\n" + b"x" * 65536
        )
        answer = s.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413 ")
    # with Expect: 100-continue the refusal comes before the body
    with socket.create_connection((gw.host, gw.port), timeout=5) as s:
        s.sendall(
            b"POST /webhooks/forgejo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            b"Content-Length: 2000000\r\n\r\n"
        )
        answer = s.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413 ")
    # an ordinary client sending all of it gets the answer too
    status, _h, body = deliver(gw, "pull_request", b"x" * (1024 * 1024 + 1))
    assert status == 413 and "larger" in body["error"]
    with socket.create_connection((gw.host, gw.port), timeout=5) as s:
        s.sendall(b"POST /webhooks/forgejo HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 411 ")
    with socket.create_connection((gw.host, gw.port), timeout=5) as s:
        s.sendall(b"POST /reviews/ci HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 411 ")
    assert gw.get("/healthz")[0] == 200


def test_slow_clients_are_dropped_and_do_not_block_others(gw: Served) -> None:
    half = socket.create_connection((gw.host, gw.port), timeout=10)
    half.sendall(b"POST /webhooks/forgejo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    idle = socket.create_connection((gw.host, gw.port), timeout=10)  # sends nothing at all
    trickle = socket.create_connection((gw.host, gw.port), timeout=10)
    started = time.monotonic()
    # while they hang, everyone else is served at once
    for _ in range(5):
        t0 = time.monotonic()
        assert gw.get("/healthz")[0] == 200
        assert time.monotonic() - t0 < 0.5
    # a client that sends a header byte every 0.2 s never trips a per-read timeout,
    # but the whole request has REQUEST_TIMEOUT seconds
    dropped_trickle = None
    for byte in b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 100:
        try:
            trickle.sendall(bytes([byte]))
        except OSError:
            dropped_trickle = time.monotonic() - started
            break
        time.sleep(0.2)
        if time.monotonic() - started > 6:
            break
    for sock in (half, idle):
        assert sock.recv(1024) == b""  # closed by the server (no answer to a partial request)
    elapsed = time.monotonic() - started
    assert elapsed < REQUEST_TIMEOUT + 2.5, elapsed
    if dropped_trickle is None:  # the send may still succeed; the read tells
        trickle.settimeout(5)
        try:
            assert trickle.recv(1024) == b""
        except ConnectionResetError:
            pass
    assert time.monotonic() - started < 6
    for sock in (half, idle, trickle):
        sock.close()
    assert "dropped: request incomplete" in gw.stderr
    assert gw.get("/healthz")[0] == 200


def test_connections_beyond_the_cap_get_a_canned_503(gw: Served) -> None:
    from auto_review_gateway.web.server import MAX_CONNECTIONS

    idle = [socket.create_connection((gw.host, gw.port), timeout=5) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.3)  # all accepted, each holding a slot until it times out
        with socket.create_connection((gw.host, gw.port), timeout=5) as extra:
            extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = extra.recv(4096)
        assert answer.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 5" in answer
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 5
    while gw.request("GET", "/healthz")[0] != 200:  # slots come back as the idle ones go
        assert time.monotonic() < deadline
        time.sleep(0.1)


# --------------------------------------------------------------------------- /reviews/ci


def test_ci_review_requests(gw: Served, forge: FakeForgejo) -> None:
    head = sha("ci-head")
    forge.set_pull("acme", "demo", 8, head, clone_url=NOWHERE)
    good = {"owner": "acme", "repo": "demo", "pr_number": 8, "head_sha": head, "force": False}
    status, headers, body = ci(gw, good, token="wrong-" + CI_TOKEN[6:])
    assert status == 401 and headers["www-authenticate"] == "Bearer"
    assert ci(gw, good, token=None)[0] == 401
    for bad in (
        {**good, "head_sha": "abc"},
        {**good, "head_sha": 1234},
        {**good, "pr_number": "8"},
        {**good, "pr_number": True},
        {**good, "owner": "../etc"},
        {**good, "force": "yes"},
    ):
        status, _h, body = ci(gw, bad)
        assert status == 400, bad
    assert (
        gw.request("POST", "/reviews/ci", b"{oops", {"Authorization": f"Bearer {CI_TOKEN}"})[0]
        == 400
    )
    moved = sha("ci-old-head")
    status, _h, body = ci(gw, {**good, "head_sha": moved})
    assert (status, body) == (409, {"error": "head moved", "head": head})
    status, _h, body = ci(gw, {**good, "pr_number": 999})
    assert status == 404
    status, _h, body = ci(gw, {**good, "head_sha": head.upper()})
    assert status == 202, body
    job = gw.jobs()[body["job_id"]]
    assert (job["reason"], job["clone_url"], job["head_sha"]) == ("ci", NOWHERE, head)
    status, _h, body = ci(gw, good)
    assert status == 200 and body["duplicate"] is True
    status, _h, body = ci(gw, {**good, "force": True})
    assert status == 202
    # without base.repo.clone_url the clone URL is built from FORGEJO_BASE_URL
    forge.set_pull("acme", "demo", 9, sha("ci-9"))
    status, _h, body = ci(gw, {**good, "pr_number": 9, "head_sha": sha("ci-9")})
    assert status == 202
    assert gw.jobs()[body["job_id"]]["clone_url"] == f"{forge.url}/acme/demo.git"


def test_with_ar_trigger_ci_webhooks_record_and_ci_or_commands_review(
    tmp_path: Path, forge: FakeForgejo
) -> None:
    head = sha("gated-head")
    forge.set_pull("acme", "demo", 41, head, clone_url=NOWHERE)
    served = Served(tmp_path, forge.url, AR_TRIGGER="ci", AR_CI_REVIEW_TOKEN=CI_TOKEN)
    try:
        status, _h, body = deliver(served, "pull_request", pr_event(41, head))
        assert status == 200 and body["recorded"].startswith(f"acme/demo#41 at {head}"), body
        assert served.jobs() == {}
        bad = pr_event(41, "not-a-sha")  # still checked: a bad event is still a 400
        assert deliver(served, "pull_request", bad)[0] == 400
        doc = {"owner": "acme", "repo": "demo", "pr_number": 41, "head_sha": head}
        status, _h, body = ci(served, doc)
        assert status == 202 and served.jobs()[body["job_id"]]["reason"] == "ci"
        comment = comment_event(41, "@auto-review full-review")
        status, _h, body = deliver(served, "issue_comment", comment)
        assert status == 202 and served.jobs()[body["job_id"]]["reason"].startswith("command:")
    finally:
        assert served.stop() == 0, served.stderr
    assert f"recorded acme/demo#41 at {head}" in served.stderr


ROOT = GATEWAY.parent.parent
SPECS = ROOT.parent / "shared" / "specs"
WORKFLOWS = {
    # the workflow, and the recorded pull_request webhook its forge hands it as github.event
    "forgejo": (
        ROOT / "deploy" / "forgejo-actions" / "auto-review.yaml",
        lambda: json.loads((SPECS / "gitea-fixtures/go-scm/pull_request_opened.json").read_text()),
    ),
    "github": (
        ROOT / "deploy" / "github-actions" / "auto-review.yml",
        lambda: next(
            e["examples"][0]
            for e in json.loads(
                (SPECS / "github/webhooks-examples.api.github.com.index.json").read_text()
            )
            if e["name"] == "pull_request"
        ),
    ),
}


def _expand(value: str, context: dict[str, Any]) -> str:
    """A workflow value with its ``${{ a.b.c }}`` expressions looked up in ``context``
    (KeyError for a path the context does not have: a typo in the workflow)."""

    def look(match: re.Match[str]) -> str:
        node: Any = context
        for part in match.group(1).split("."):
            node = node[part]
        return str(node)

    return re.sub(r"\$\{\{\s*([\w.]+)\s*\}\}", look, value)


@pytest.mark.parametrize("forge_name", sorted(WORKFLOWS))
def test_the_shipped_ci_workflows_ask_for_a_review_after_the_build(
    forge_name: str, gw: Served, forge: FakeForgejo, tmp_path: Path
) -> None:
    import yaml  # PyYAML, the dev dependency pinned in pyproject.toml

    path, recorded = WORKFLOWS[forge_name]
    doc = yaml.safe_load(path.read_text())
    on = doc.get("on", doc.get(True))  # YAML 1.1 reads the key `on` as true
    assert "synchronize" in on["pull_request"]["types"]
    [job] = [j for j in doc["jobs"].values() if "/reviews/ci" in json.dumps(j)]
    assert job["needs"] == "build" and "build" in doc["jobs"]  # after the build passed
    [step] = [s for s in job["steps"] if "/reviews/ci" in s.get("run", "")]
    event = recorded()
    owner = event["repository"]["owner"]["login"]
    head = event["pull_request"]["head"]["sha"]
    context = {
        "github": {"event": event, "repository_owner": owner},
        "secrets": {"AUTO_REVIEW_CI_TOKEN": CI_TOKEN},
        "vars": {"AUTO_REVIEW_URL": f"http://{gw.host}:{gw.port}"},
    }
    env = {k: _expand(str(v), context) for k, v in step["env"].items()}
    assert "secrets.AUTO_REVIEW_CI_TOKEN" in step["env"]["AUTO_REVIEW_CI_TOKEN"]

    def run_step(**extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-e", "-c", step["run"]],
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env, **extra},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )

    forge.set_pull(owner, event["repository"]["name"], event["number"], head, clone_url=NOWHERE)
    before = set(gw.jobs())
    result = run_step()
    assert result.returncode == 0 and "answered 202" in result.stdout, result.stderr
    [job_id] = set(gw.jobs()) - before
    row = gw.jobs()[job_id]
    assert (row["owner"], row["pr_number"], row["head_sha"], row["reason"]) == (
        owner, event["number"], head, "ci"
    )  # fmt: skip
    assert "answered 200" in run_step().stdout  # the same head again: a duplicate
    forge.set_pull(owner, event["repository"]["name"], event["number"], sha("moved"))
    assert "answered 409" in run_step().stdout  # the PR moved on: the newer run asks
    refused = run_step(AUTO_REVIEW_CI_TOKEN="wrong-" + CI_TOKEN[6:])
    assert refused.returncode == 1 and "answered 401" in refused.stdout


# --------------------------------------------------------------------------- logs


def test_access_log_has_no_query_strings_headers_or_secrets(gw: Served) -> None:
    assert gw.get(f"/healthz?token={SECRET}&x=QUERYMARK")[0] == 200
    deliver(gw, "pull_request", pr_event(30, sha("log")))
    time.sleep(0.2)
    log = gw.stderr
    assert re.search(r"^auto-review: http 127\.0\.0\.1 GET /healthz 200 \d+ms$", log, re.M)
    assert "QUERYMARK" not in log
    assert "X-Forgejo" not in log and "Authorization" not in log
    for secret in SECRETS:
        assert secret not in log
    assert "Traceback" not in log


# --------------------------------------------------------------------------- process


def test_missing_configuration_exits_6_naming_only_the_names(tmp_path: Path) -> None:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AUTO_REVIEW_STATE_DIR_INSIDE": str(tmp_path),
        "WEBHOOK_SECRET": SECRET,
        "AR_CI_REVIEW_TOKEN": CI_TOKEN,
    }

    def run(command: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "auto_review_gateway", command],
            cwd=GATEWAY,
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=30,
        )

    result = run("gateway")  # the alias
    assert result.returncode == 6
    assert result.stderr == (
        "auto-review: error: missing required configuration: FORGEJO_BASE_URL, AR_FORGEJO_TOKEN\n"
    )
    assert result.stdout == ""
    configured = {"FORGEJO_BASE_URL": "http://127.0.0.1:9", "AR_FORGEJO_TOKEN": TOKEN}
    for extra, name in (
        ({"AR_CI_REVIEW_TOKEN": "short-ci-token"}, "AR_CI_REVIEW_TOKEN"),
        ({"AR_GATEWAY_BIND": "localhost"}, "AR_GATEWAY_BIND"),
        ({"AR_REVIEW_CONCURRENCY": "0"}, "AR_REVIEW_CONCURRENCY"),
        ({"AR_QUEUE_MAX": "many"}, "AR_QUEUE_MAX"),
        ({"AR_SHUTDOWN_GRACE": "-1"}, "AR_SHUTDOWN_GRACE"),
        ({"FORGEJO_BASE_URL": f"ftp://{SECRET}@forge"}, "FORGEJO_BASE_URL"),
        ({"GITHUB_TOKEN": "ghp_" + "y" * 36}, "both GitHub"),  # two forges: which one?
        ({"AR_TRIGGER": "push"}, "AR_TRIGGER must be webhook or ci"),
        ({"AR_TRIGGER": "ci", "AR_CI_REVIEW_TOKEN": ""}, "AR_TRIGGER=ci needs AR_CI_REVIEW_TOKEN"),
    ):
        result = run("serve", **{**configured, **extra})
        assert result.returncode == 6, (name, result.stderr)
        assert result.stderr.startswith("auto-review: error: ") and name in result.stderr
        assert result.stderr.count("\n") == 1
        for secret in (*SECRETS, "short-ci-token"):
            assert secret not in result.stderr + result.stdout


def test_sigterm_stops_within_5_seconds(tmp_path: Path, forge: FakeForgejo) -> None:
    gw = Served(tmp_path, forge.url, AR_SHUTDOWN_GRACE="30")
    deliver(gw, "pull_request", pr_event(40, sha("sigterm")))
    started = time.monotonic()
    gw.proc.send_signal(signal.SIGTERM)
    assert gw.proc.wait(timeout=5) == 0
    assert time.monotonic() - started < 5
    with pytest.raises(OSError):
        socket.create_connection((gw.host, gw.port), timeout=1).close()
    assert "auto-review: stopped" in gw.stderr


def test_ipv6_bind(tmp_path: Path, forge: FakeForgejo) -> None:
    gw = Served(tmp_path, forge.url, AR_GATEWAY_BIND="[::1]:0")
    try:
        assert gw.host == "[::1]"
        assert gw.get("/healthz") == (200, {"status": "ok"})
    finally:
        assert gw.stop() == 0


def test_a_burst_of_200_webhooks(tmp_path: Path, forge: FakeForgejo) -> None:
    gw = Served(tmp_path, forge.url, AR_QUEUE_MAX="100", AR_REVIEW_CONCURRENCY="2")
    try:
        rss_before = _rss_kib(gw.proc.pid)

        def one(i: int) -> tuple[int, dict[str, str], Any]:
            return deliver(gw, "pull_request", pr_event(100 + i, sha(f"burst-{i}")))

        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            answers = list(pool.map(one, range(200)))
        elapsed = time.monotonic() - started
        accepted = [body["job_id"] for status, _h, body in answers if status == 202]
        full = [(h, body) for status, h, body in answers if status == 503]
        others = [(status, body) for status, _h, body in answers if status not in (202, 503)]
        assert not others
        assert len(accepted) >= 100  # the queue holds 100 pending, workers take more
        assert len(accepted) + len(full) == 200
        for headers, body in full:
            assert headers["retry-after"] == "30" and "full" in body["error"]
        stored = gw.jobs()
        assert all(job_id in stored for job_id in accepted)
        assert len(set(accepted)) == len(accepted)
        rss_after = _rss_kib(gw.proc.pid)
        print(
            f"\nburst: 200 webhooks in {elapsed:.2f} s: {len(accepted)} accepted"
            f" ({len(accepted) / elapsed:.0f}/s), {len(full)} answered 503 (queue full);"
            f" server RSS {rss_before} -> {rss_after} KiB"
        )
        assert gw.get("/healthz")[0] == 200
    finally:
        assert gw.stop() == 0


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


# --------------------------------------------------------------------------- units


def test_bind_addresses() -> None:
    from auto_review_gateway.web.server import display_address, parse_bind

    assert parse_bind("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_bind("[::1]:0") == ("::1", 0)
    assert parse_bind("0.0.0.0:65535") == ("0.0.0.0", 65535)
    assert display_address("::1", 80) == "[::1]:80"
    for bad in ("localhost", "::1:80", "[::1]80", "host:99999", ":80", "host:", "[]:80"):
        with pytest.raises(ValueError):
            parse_bind(bad)


def test_signature_token_and_mention_checks() -> None:
    from auto_review_gateway.forges.commands import parse_command
    from auto_review_gateway.intake.auth import bearer_ok, signature_ok

    body = b'{"a": 1}'
    assert signature_ok(SECRET.encode(), body, sign(body))
    assert signature_ok(SECRET.encode(), body, "sha256=" + sign(body).upper())
    assert not signature_ok(SECRET.encode(), body, sign(body)[:-1])
    assert not signature_ok(SECRET.encode(), body, "")
    assert not signature_ok(SECRET.encode(), body, None)
    assert not signature_ok(SECRET.encode(), body, "ü" * 64)
    assert bearer_ok(CI_TOKEN, f"Bearer {CI_TOKEN}")
    assert bearer_ok(CI_TOKEN, f"bearer  {CI_TOKEN} ")
    assert not bearer_ok(CI_TOKEN, f"token {CI_TOKEN}")
    assert not bearer_ok(CI_TOKEN, f"Bearer {CI_TOKEN}x")
    assert not bearer_ok(CI_TOKEN, None)
    for text in ("@auto-review re-review", "@Auto-Review RE-REVIEW.", "hi\n@auto-review re-review"):
        assert parse_command(text, "auto-review") == "re-review", text
    for text in ("@auto-review rereview", "@auto-review pre-review"):
        assert parse_command(text, "auto-review") == "help", text  # tests/test_commands.py
    for text in (
        "@auto-review-bot re-review",
        "mail@auto-review re-review",
        "auto-review re-review",
    ):
        assert parse_command(text, "auto-review") is None, text


def test_jobs_lists_attempts_and_last_errors_and_metrics_count_retries(
    gw: Served, forge: FakeForgejo
) -> None:
    forge.add_commit("acme", "demo", sha("listed"))  # a status on it is accepted
    event = pr_event(34, sha("listed"))
    status, _h, body = deliver(gw, "pull_request", event)
    assert status == 202
    job_id = body["job_id"]
    # Its clone fails (nothing listens): the job goes back to the queue for a retry.
    wait_for(lambda: gw.jobs()[job_id]["attempts"] == 1 and gw.jobs()[job_id]["error"], gw, forge)
    assert gw.jobs()[job_id]["state"] == "pending"
    status, listing = gw.get("/jobs")
    assert status == 200
    [row] = [j for j in listing["jobs"] if j["id"] == job_id]
    assert row["attempts"] == 1 and row["state"] == "pending"
    assert row["error"].startswith("clone: ") and row["not_before"] > row["created_at"]
    assert not any(secret in json.dumps(listing) for secret in SECRETS)
    assert gw.metric("job_retries_total", '{cause="clone"}') >= 1
    assert gw.metric("jobs_waiting_retry") >= 1


def test_a_closed_pr_is_noted_not_reviewed(gw: Served) -> None:
    # Last in this file: the tests above count on the ids of the jobs they queue.
    status, _h, body = deliver(gw, "pull_request", pr_event(4, sha("closed"), action="closed"))
    assert status == 202, body
    assert gw.jobs()[body["job_id"]]["reason"] == "pull_request:closed"
