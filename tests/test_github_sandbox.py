"""`auto-review serve` for GitHub through the real single file and real runc: signed
``pull_request`` webhooks on ``/webhooks/github`` in, reviews with inline comments and
commit statuses out to the loopback GitHub stand-in (GHES-shaped, ``/api/v3``, over
verified TLS), the repository cloned over HTTPS from the stand-in's git endpoint with
the token as ``x-access-token``."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import HOST_PYTHON, needs_root
from fake_github import FakeGitHub
from gitserver import commit, make_ca, make_repo

pytestmark = needs_root
sys.path.insert(0, str(Path(__file__).resolve().parent))
SECRET = "github-webhook-secret-for-tests"
TOKEN = "ghp_" + "s" * 36


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    base = Path("/tmp") / f"ar-github-{os.getpid()}"
    base.mkdir(mode=0o755)
    certs = make_ca(base / "certs")
    git_dir = base / "repos" / "acme" / "demo.git"
    make_repo(git_dir, {"app.py": "x = 1\ny = 2\n"}, "base")
    heads = {}
    for name, content in (("clean", "x = 1   \ny = 2\n"), ("broken", "<<<<<<< HEAD\ny = 2\n")):
        subprocess.run(["git", "--git-dir", str(git_dir), "branch", name, "main"], check=True)
        heads[name] = commit(git_dir, {"app.py": content}, name, branch=name)
    subprocess.run(["chmod", "-R", "a+rX", str(base)], check=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.server_cert, certs.server_key)
    with FakeGitHub(ssl_context=context, tokens=(TOKEN,), git_root=base / "repos") as hub:
        hub.set_pull("acme", "demo", 1, heads["clean"])
        hub.set_pull("acme", "demo", 2, heads["broken"])
        yield {"hub": hub, "heads": heads, "ca": certs.ca_cert, "home": base / "home"}
    shutil.rmtree(base, ignore_errors=True)


class Gateway:
    """`auto-review serve` through the launcher; the GitHub settings in the state dir's
    github.env (the launcher passes only its allowlist of variables)."""

    def __init__(self, app: Path, world: dict) -> None:
        self.port = free_port()
        home: Path = world["home"]
        state = home / "state"
        state.mkdir(parents=True, mode=0o700, exist_ok=True)
        settings = f"GITHUB_API_URL={world['hub'].api_url}\nGITHUB_TOKEN={TOKEN}\n"
        (state / "github.env").write_text(settings)
        os.chmod(state / "github.env", 0o644)
        os.chown(state, 10001, 10001)  # as an operator installs it: the gateway user's
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(home),
            "AUTO_REVIEW_CACHE_DIR": str(home / "cache"),
            "AUTO_REVIEW_STATE_DIR": str(state),
            "AUTO_REVIEW_CA_FILE": str(world["ca"]),
            "AR_GATEWAY_BIND": f"127.0.0.1:{self.port}",
            "WEBHOOK_SECRET": SECRET,
            # the stand-ins listen on the host's loopback: the documented same-host setting
            "AUTO_REVIEW_NETWORK": "host",
        }
        self.proc = subprocess.Popen(
            [HOST_PYTHON, str(app), "serve"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.errors: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if "serving on" in line:
                return
            if not line and self.proc.poll() is not None:
                raise AssertionError(f"serve exited: {''.join(self.errors)[-2000:]}")
        raise AssertionError("serve never said it was serving")

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.errors.append(line)

    def deliver(self, event: str, doc: dict, secret: str = SECRET) -> tuple[int, dict]:
        body = json.dumps(doc).encode()
        signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/webhooks/github",
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "X-GitHub-Event": event,
                "X-GitHub-Delivery": str(uuid.uuid4()),
                "X-Hub-Signature-256": signature,
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


def pr_event(hub: FakeGitHub, action: str, number: int, head: str) -> dict:
    return {
        "action": action,
        "number": number,
        "pull_request": {
            "number": number,
            "draft": False,
            "state": "open",
            "head": {"sha": head, "ref": "topic"},
            "base": {"ref": "main"},
        },
        "repository": {
            "name": "demo",
            "full_name": "acme/demo",
            "owner": {"login": "acme"},
            "clone_url": f"{hub.api_url.removesuffix('/api/v3')}/acme/demo.git",
        },
    }


def states(hub: FakeGitHub, sha: str) -> list[str]:
    return [s["state"] for s in list(hub.statuses) if s["sha"] == sha]


def wait_final(hub: FakeGitHub, sha: str, timeout: float = 180) -> list[str]:
    """The statuses of `sha` once a final one is posted (each post wakes us)."""
    seen = hub.wait_for_statuses(
        sha, lambda s: bool(s) and s[-1] in ("success", "failure", "error"), timeout
    )
    assert seen and seen[-1] in ("success", "failure", "error"), f"no final status: {seen}"
    return seen


def test_github_webhooks_get_reviews_with_inline_comments_and_statuses(
    app: Path, world: dict
) -> None:
    hub: FakeGitHub = world["hub"]
    clean, broken = world["heads"]["clean"], world["heads"]["broken"]
    hub.fail("status", 429, headers={"retry-after": "0"})  # the first status: rate limited
    gw = Gateway(app, world)
    try:
        assert gw.deliver("ping", {"zen": "Keep it logically awesome."}) == (200, {"pong": True})
        bad, _ = gw.deliver("pull_request", pr_event(hub, "opened", 1, clean), secret="wrong")
        assert bad == 401
        status, answer = gw.deliver("pull_request", pr_event(hub, "opened", 1, clean))
        assert status == 202, answer
        assert wait_final(hub, clean) == ["pending", "success"], "".join(gw.errors)[-2000:]
        [limited] = [r for r in hub.of_kind("status") if r.status == 429]
        assert limited.json["state"] == "pending"  # and the retry got through
        [review] = hub.reviews("acme", "demo", 1)
        assert review["commit_id"] == clean and review["state"] == "COMMENTED"
        assert [(c["path"], c["line"], c["side"]) for c in review["comments"]] == [
            ("app.py", 1, "RIGHT")
        ]
        fetches = [r for r in hub.of_kind("git")]
        basic = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
        assert fetches and all(r.status == 200 for r in fetches)
        assert all(r.headers.get("authorization") == f"Basic {basic}" for r in fetches)

        first = gw.deliver("pull_request", pr_event(hub, "synchronize", 2, broken))
        second = gw.deliver("pull_request", pr_event(hub, "synchronize", 2, broken))
        assert first[0] == 202 and second == (
            200,
            {"duplicate": True, "job_id": first[1]["job_id"]},
        )
        assert wait_final(hub, broken) == ["pending", "failure"]
        [review] = hub.reviews("acme", "demo", 2)
        assert review["state"] == "CHANGES_REQUESTED"
        assert any(c["line"] == 1 for c in review["comments"])
    finally:
        assert gw.stop() in (0, 143)


def test_app_auth_without_cryptography_in_the_sandbox_is_a_one_line_config_error(
    app: Path, tmp_path: Path
) -> None:
    # The single file does not ship cryptography yet (docs/GATEWAY.md, "GitHub"): an App
    # is refused at start, with the fix, not with a traceback at the first webhook.
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "github.env").write_text("GITHUB_APP_ID=4242\n")
    (state / "github-app.pem").write_text("-----BEGIN PRIVATE KEY-----\n")
    for name in ("github.env", "github-app.pem"):
        os.chmod(state / name, 0o644)
    os.chown(state, 10001, 10001)  # as an operator installs it: the gateway user's
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "AUTO_REVIEW_CACHE_DIR": str(tmp_path / "cache"),
        "AUTO_REVIEW_STATE_DIR": str(state),
        "WEBHOOK_SECRET": SECRET,
    }
    proc = subprocess.run(
        [HOST_PYTHON, str(app), "serve"], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 6, proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert "cryptography" in line and "GITHUB_TOKEN" in line
