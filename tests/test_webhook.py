"""`auto-review webhook register|list|test`: the forge's webhook to the gateway through the
forge's API, against the stand-ins, which check every hook request and answer against
Forgejo's swagger and GitHub's OpenAPI document (tests/apidoc.py). Register is
idempotent (a second run sends nothing), a changed --url updates the same hook, the
events are README's; `test` has the forge deliver to a real gateway (`serve` from
source, and through the single file in the sandbox) and reports what it answered.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, needs_root, run_app

sys.path.insert(0, str(ROOT / "payload" / "gateway"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from auto_review_gateway import cli
from auto_review_gateway.forges.forgejo import hooks as forgejo_hooks
from auto_review_gateway.forges.github import hooks as github_hooks

from tests.fake_forgejo import FakeForgejo
from tests.fake_github import FakeGitHub
from tests.gitserver import CertFiles, make_ca
from tests.test_server import SECRET, TOKEN, Served

GH_TOKEN = "ghp_" + "w" * 36
STRONG = "4be0c1d2e3f4a5b6c7d8e9f0a1b2c3d4" * 2  # what `openssl rand -hex 32` looks like


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("FORGEJO_BASE_URL", "AR_FORGEJO_TOKEN", "GITHUB_TOKEN", "GITHUB_APP_ID",
                 "GITHUB_API_URL", "LLM_BASE_URL"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AUTO_REVIEW_STATE_DIR_INSIDE", str(tmp_path / "state"))
    monkeypatch.setenv("WEBHOOK_SECRET", SECRET)
    return monkeypatch


@pytest.fixture
def forge(env: pytest.MonkeyPatch) -> Iterator[FakeForgejo]:
    with FakeForgejo(token=TOKEN) as fake:
        env.setenv("FORGEJO_BASE_URL", fake.base_url)
        env.setenv("AR_FORGEJO_TOKEN", TOKEN)
        yield fake


def webhook(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict, str]:
    """Run ``webhook ARGS --json`` in-process: (exit status, the JSON, stderr)."""
    code = cli.main(["webhook", *args, "--json"])
    out, err = capsys.readouterr()
    assert SECRET not in out + err and TOKEN not in out + err and GH_TOKEN not in out + err
    return code, (json.loads(out) if out.strip() else {}), err


def writes(fake: FakeForgejo | FakeGitHub) -> list[str]:
    return [r.method for r in fake.requests if r.method in ("POST", "PATCH")]


def readme_step(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    step = text[text.index(title) :]
    return step[: step.index("\n\n", step.index("\n   -"))]


def test_the_events_registered_are_the_ones_readme_names() -> None:
    step = readme_step("**Register the webhook**")
    named = re.findall(r"^   - \*[^*]+\* \(`([a-z_]+)`\)", step, re.M)
    assert tuple(named) == forgejo_hooks.EVENTS
    github = (ROOT / "README.md").read_text()
    assert "*Subscribe to events*: **Pull request** and **Issue comment**" in github
    assert github_hooks.EVENTS == ("issue_comment", "pull_request")


def test_forgejo_register_is_idempotent_and_a_new_url_updates_the_hook(
    forge: FakeForgejo, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "https://gateway.example/webhooks/forgejo"
    code, doc, _ = webhook(capsys, "register", "--repo", "acme/demo", "--url", url)
    assert code == 0 and doc["action"] == "created"
    [created] = forge.posted("/hooks")
    assert created[1]["events"] == ["pull_request", "pull_request_sync", "pull_request_comment"]
    assert created[1]["config"] == {"url": url, "content_type": "json", "secret": SECRET,
                                    "http_method": "post"}  # fmt: skip
    [hook] = forge.hooks["repos/acme/demo"]
    assert hook["_secret"] == SECRET and hook["active"] is True

    before = writes(forge)
    code, doc, _ = webhook(capsys, "register", "--repo", "acme/demo", "--url", url)
    assert code == 0 and doc["action"] == "unchanged" and writes(forge) == before

    moved = "https://gw2.example:8443/webhooks/forgejo"
    code, doc, _ = webhook(capsys, "register", "--repo", "acme/demo", "--url", moved)
    assert code == 0 and doc["action"] == "updated" and doc["hook"]["id"] == hook["id"]
    assert writes(forge) == [*before, "PATCH"]
    [hook] = forge.hooks["repos/acme/demo"]  # the same hook, moved; events kept
    assert hook["url"] == moved and {"pull_request_sync", "pull_request_comment"} <= set(
        hook["events"]
    )
    code, doc, _ = webhook(capsys, "list", "--repo", "acme/demo")
    assert [(h["url"], h["gateway"]) for h in doc["hooks"]] == [(moved, True)]
    hook["content_type"] = "form"  # someone changed it by hand in the forge's settings
    code, doc, _ = webhook(capsys, "register", "--repo", "acme/demo", "--url", moved)
    assert (
        doc["action"] == "updated" and forge.hooks["repos/acme/demo"][0]["content_type"] == "json"
    )


def test_forgejo_organisations_have_hooks_too(
    forge: FakeForgejo, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "https://gateway.example/webhooks/forgejo"
    code, doc, _ = webhook(capsys, "register", "--org", "acme", "--url", url)
    assert code == 0 and doc["action"] == "created" and "orgs/acme" in forge.hooks
    assert webhook(capsys, "register", "--org", "acme", "--url", url)[1]["action"] == "unchanged"


def test_a_hostile_hook_listing_cannot_forge_lines_or_drive_the_terminal(
    forge: FakeForgejo, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "https://evil.example/\x1b[2J\nok 1 https://gw.example/webhooks/forgejo"
    forge.hooks["repos/acme/demo"] = [
        {"id": 9, "type": "gitea", "active": True, "branch_filter": "", "created_at": "x",
         "updated_at": "x", "url": url, "content_type": "json", "events": ["push"]}
    ]  # fmt: skip
    assert cli.main(["webhook", "list", "--repo", "acme/demo"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "\x1b" not in out  # one hook, one line, escaped
    assert "\\x1b[2J\\nok 1" in out and not out.endswith("(the gateway)\n")


@pytest.mark.parametrize(
    ("args", "secret", "code", "says"),
    [
        (("register", "--repo", "acme/demo"), SECRET, 2, "register needs --url"),
        (("register", "--repo", "acme/demo", "--url", "https://g.example/hook"), SECRET, 2,
         "must end in /webhooks/forgejo"),
        (("register", "--repo", "acme/demo", "--url", "https://g.example/webhooks/forgejo"),
         "hunter2", 6, "openssl rand -hex 32"),
        (("test", "--repo", "acme/demo"), SECRET, 6, "auto-review webhook register --repo"),
        (("list", "--repo", "acme/../x"), SECRET, 2, "OWNER/NAME"),
    ],
    ids=["no-url", "wrong-path", "weak-secret", "test-unregistered", "bad-repo"],
)  # fmt: skip
def test_bad_input_is_one_line_with_its_fix(
    forge: FakeForgejo,
    env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: tuple[str, ...],
    secret: str,
    code: int,
    says: str,
) -> None:
    env.setenv("WEBHOOK_SECRET", secret)
    got, doc, err = webhook(capsys, *args)
    assert got == code and doc == {} and says in err and len(err.splitlines()) == 1
    assert secret not in err and writes(forge) == []


def test_a_token_without_the_scope_gets_the_forges_refusal(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeForgejo(token=TOKEN, scopes=("read:repository", "read:user")) as fake:
        env.setenv("FORGEJO_BASE_URL", fake.base_url)
        env.setenv("AR_FORGEJO_TOKEN", TOKEN)
        url = "https://g.example/webhooks/forgejo"
        code, _, err = webhook(capsys, "register", "--repo", "acme/demo", "--url", url)
    assert code == 7 and "HTTP 403" in err and "write:repository" in err


def test_forgejo_test_reaches_a_real_gateway_and_reports_its_answer(
    forge: FakeForgejo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gw = Served(tmp_path / "gw", forge.base_url)
    try:
        url = f"http://127.0.0.1:{gw.port}/webhooks/forgejo"
        assert webhook(capsys, "register", "--repo", "acme/demo", "--url", url)[0] == 0
        code, doc, _ = webhook(capsys, "test", "--repo", "acme/demo")
        assert code == 0 and doc["ok"] is True and doc["status"] == 200
        assert "ignored" in doc["answer"]  # the gateway's answer to a test push
        # Forgejo's own test delivery reached the gateway too, and was accepted
        assert [status for status, _ in forge.deliveries] == [200]
        # the gateway's secret changed: the same test now fails, and says so
        os.environ["WEBHOOK_SECRET"] = STRONG  # what this command signs with
        code, doc, _ = webhook(capsys, "test", "--repo", "acme/demo")
        assert code == 1 and doc["status"] == 401 and doc["ok"] is False
    finally:
        gw.stop()


# --------------------------------------------------------------------------- GitHub


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return make_ca(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def hub(certs: CertFiles, env: pytest.MonkeyPatch) -> Iterator[FakeGitHub]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.server_cert, certs.server_key)
    env.setenv("SSL_CERT_FILE", str(certs.ca_cert))
    with FakeGitHub(ssl_context=context, tokens=(GH_TOKEN,)) as fake:
        env.setenv("GITHUB_API_URL", fake.api_url)
        env.setenv("GITHUB_TOKEN", GH_TOKEN)
        yield fake


def test_github_register_is_idempotent_updates_and_pings_a_real_gateway(
    hub: FakeGitHub, certs: CertFiles, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gw = Served(
        tmp_path / "gw",
        "",
        FORGEJO_BASE_URL=None,  # type: ignore[arg-type]
        AR_FORGEJO_TOKEN=None,  # type: ignore[arg-type]
        GITHUB_TOKEN=GH_TOKEN,
        GITHUB_API_URL=hub.api_url,
        SSL_CERT_FILE=str(certs.ca_cert),
    )
    try:
        old = "https://gw.example/webhooks/github"
        code, doc, _ = webhook(capsys, "register", "--repo", "acme/demo", "--url", old)
        assert code == 0 and doc["action"] == "created"
        [hook] = hub.hooks[("acme", "demo")]
        assert hook["events"] == ["issue_comment", "pull_request"] and hook["_secret"] == SECRET
        assert hook["config"]["content_type"] == "json" and hook["config"]["insecure_ssl"] == "0"
        before = writes(hub)
        assert webhook(capsys, "register", "--repo", "acme/demo", "--url", old)[1] == {
            "action": "unchanged",
            "hook": {"id": hook["id"], "url": old, "events": ["issue_comment", "pull_request"],
                     "active": True, "content_type": "json"},
        }  # fmt: skip
        assert writes(hub) == before
        url = f"http://127.0.0.1:{gw.port}/webhooks/github"
        code, doc, _ = webhook(capsys, "register", "--repo", "acme/demo", "--url", url)
        assert doc["action"] == "updated" and writes(hub) == [*before, "PATCH"]
        code, doc, _ = webhook(capsys, "test", "--repo", "acme/demo")
        assert code == 0 and doc["status"] == 200, doc  # GitHub's ping, answered by the gateway
        [delivery] = hub.hooks[("acme", "demo")][0]["deliveries"]
        assert delivery["event"] == "ping" and delivery["status_code"] == 200
        org = webhook(capsys, "list", "--org", "acme")
        assert org[0] == 2 and "--org is for Forgejo organisations" in org[2]
    finally:
        gw.stop()


# --------------------------------------------------------------------------- the single file


@needs_root
def test_register_and_test_through_the_single_file(app: Path, tmp_path: Path) -> None:
    with FakeForgejo(token=TOKEN) as fake:
        gw = Served(tmp_path / "gw", fake.base_url)
        try:
            env = {
                "PATH": os.environ["PATH"],
                "HOME": str(tmp_path),
                "AUTO_REVIEW_CACHE_DIR": str(tmp_path / "cache"),
                "AUTO_REVIEW_STATE_DIR": str(tmp_path / "state"),
                "AUTO_REVIEW_NETWORK": "host",  # the stand-in and the gateway: this loopback
                "FORGEJO_BASE_URL": fake.base_url,
                "AR_FORGEJO_TOKEN": TOKEN,
                "WEBHOOK_SECRET": SECRET,
            }
            url = f"http://127.0.0.1:{gw.port}/webhooks/forgejo"
            args = ("webhook", "register", "--repo", "acme/demo", "--url", url)
            first = run_app(app, *args, env=env)
            assert first.returncode == 0 and first.stdout.startswith("created hook"), first.stderr
            again = run_app(app, *args, env=env)
            assert again.returncode == 0 and again.stdout.startswith("unchanged hook")
            tested = run_app(app, "webhook", "test", "--repo", "acme/demo", env=env)
            assert tested.returncode == 0, tested.stdout + tested.stderr
            assert "the gateway answered HTTP 200" in tested.stdout
            assert [status for status, _ in fake.deliveries] == [200]
            typo = run_app(app, "webhook", "regster", "--repo", "acme/demo", env=env)
            assert typo.returncode == 2 and "register, list, test" in typo.stderr
            for result in (first, again, tested):
                assert SECRET not in result.stdout + result.stderr
        finally:
            gw.stop()
