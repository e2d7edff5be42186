"""`auto-review serve` for GitHub through the real single file and real runc: signed
``pull_request`` webhooks on ``/webhooks/github`` in, reviews with inline comments and
commit statuses out to the loopback GitHub stand-in (GHES-shaped, ``/api/v3``, over
verified TLS), the repository cloned over HTTPS from the stand-in's git endpoint with
the token as ``x-access-token``: a static token, or an installation token the gateway
mints as a GitHub App (its JWT signed by the rootfs's cryptography)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import needs_root
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fake_github import FakeGitHub
from gitserver import commit, make_ca, make_repo
from sandboxrun import Serving

pytestmark = needs_root
sys.path.insert(0, str(Path(__file__).resolve().parent))
SECRET = "github-webhook-secret-for-tests"
TOKEN = "ghp_" + "s" * 36
APP_ID = 4242
APP_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


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
    changes = (
        ("clean", "x = 1   \ny = 2\n"),
        ("broken", "<<<<<<< HEAD\ny = 2\n"),
        ("app", "x = 1\ny = 2  \n"),
    )
    for name, content in changes:
        subprocess.run(["git", "--git-dir", str(git_dir), "branch", name, "main"], check=True)
        heads[name] = commit(git_dir, {"app.py": content}, name, branch=name)
    subprocess.run(["chmod", "-R", "a+rX", str(base)], check=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.server_cert, certs.server_key)
    with FakeGitHub(
        ssl_context=context,
        tokens=(TOKEN,),
        app_id=APP_ID,
        app_key=APP_KEY,
        git_root=base / "repos",
    ) as hub:
        hub.install("acme", "demo")
        hub.set_pull("acme", "demo", 1, heads["clean"])
        hub.set_pull("acme", "demo", 2, heads["broken"])
        hub.set_pull("acme", "demo", 3, heads["app"])
        yield {"hub": hub, "heads": heads, "ca": certs.ca_cert, "home": base / "home"}
    shutil.rmtree(base, ignore_errors=True)


class Gateway(Serving):
    """`auto-review serve` through the launcher, with `settings` in its environment (the
    launcher's allowlist passes the GitHub ones) and a state dir of its own."""

    def __init__(self, app: Path, world: dict, name: str, settings: dict[str, str]) -> None:
        self.port = free_port()
        home: Path = world["home"]
        self.state = state = home / f"state-{name}"
        state.mkdir(parents=True, mode=0o700)
        os.chown(state, 10001, 10001)  # as an operator installs it: the gateway user's
        env = {
            **settings,
            "GITHUB_API_URL": world["hub"].api_url,
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
        super().__init__(app, env)

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
    gw = Gateway(app, world, "token", {"GITHUB_TOKEN": TOKEN})
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


def test_github_app_mints_an_installation_token_in_the_sandbox(
    app: Path, world: dict, tmp_path: Path
) -> None:
    # The App's key stays a host file only root can read: the launcher hands its content
    # to the gateway through the secrets pipe, and the rootfs's cryptography signs the JWT.
    hub: FakeGitHub = world["hub"]
    pem = tmp_path / "app.pem"
    pem.write_bytes(
        APP_KEY.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    os.chmod(pem, 0o600)
    head = world["heads"]["app"]
    earlier = len(hub.requests)  # the module's other test shares the stand-in
    gw = Gateway(
        app,
        world,
        "app",
        {"GITHUB_APP_ID": str(APP_ID), "GITHUB_APP_PRIVATE_KEY_FILE": str(pem)},
    )
    try:
        status, answer = gw.deliver("pull_request", pr_event(hub, "opened", 3, head))
        assert status == 202, answer
        assert wait_final(hub, head) == ["pending", "success"], "".join(gw.errors)[-2000:]
        mints = hub.of_kind("mint")
        assert mints and all(r.status == 201 for r in mints), [r.status for r in mints]
        assert mints[0].json == {"repositories": ["demo"]}
        [token] = hub.minted  # one installation token, cached for the whole job
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        ours = hub.requests[earlier:]
        fetches = [r for r in ours if r.kind == "git" and r.headers.get("authorization")]
        assert fetches and all(r.headers["authorization"] == f"Basic {basic}" for r in fetches)
        [review] = hub.reviews("acme", "demo", 3)
        assert review["commit_id"] == head
        assert [(c["path"], c["line"]) for c in review["comments"]] == [("app.py", 2)]
        posted = [r for r in ours if r.kind in ("review", "status")]
        assert {r.headers["authorization"].split(" ", 1)[1] for r in posted} == {token}
    finally:
        assert gw.stop() in (0, 143)
    key = pem.read_bytes().split(b"\n")[1]  # a line of the key's base64
    stored = [p.read_bytes() for p in gw.state.rglob("*") if p.is_file()]
    assert stored and not any(key in data for data in stored)  # never written to disk
