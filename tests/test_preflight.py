"""`auto-review preflight`: the deployment checked from the gateway's side before the first
webhook, against the strict stand-ins (Forgejo with token scopes as Forgejo checks them,
GitHub over verified TLS with classic-token scopes and App installation permissions, an
OpenAI-compatible server). Each failure an operator makes (a wrong token, a missing
scope, a model the server does not serve, a weak webhook secret) gives its line and its
fix, exit 6, and no secret on any line. The last tests run the real single file: the
command runs inside the sandbox with the settings `serve` gets from the launcher.
"""

from __future__ import annotations

import base64
import json
import os
import random
import ssl
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import needs_root, run_app
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "payload" / "gateway"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from auto_review_gateway import cli
from auto_review_gateway.intake.auth import weak_secret

from tests.fake_forgejo import FakeForgejo
from tests.fake_github import FakeGitHub
from tests.fake_openai import FakeOpenAI
from tests.gitserver import CertFiles, make_ca

TOKEN = "f0rgej0" + "k" * 33
GH_TOKEN = "ghp_" + "p" * 36
LLM_KEY = "sk-" + "q" * 40
SECRET = "9f2c4e7a1b3d5f60" * 2 + "81a2b3c4d5e6f708" * 2  # 64 hex digits
ANSWER = '{"findings": [], "summary": "ok"}'
SETTINGS_NAMES = ("FORGEJO_BASE_URL", "AR_FORGEJO_TOKEN", "GITHUB_TOKEN", "GITHUB_APP_ID",
                  "GITHUB_API_URL", "GITHUB_APP_PRIVATE_KEY", "GITHUB_APP_PRIVATE_KEY_FILE",
                  "WEBHOOK_SECRET", "LLM_BASE_URL", "LLM_API_KEY", "LLM_REASONING_MODEL",
                  "AR_CI_REVIEW_TOKEN")  # fmt: skip


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in SETTINGS_NAMES:
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


@pytest.fixture
def llm(env: pytest.MonkeyPatch) -> Iterator[FakeOpenAI]:
    with FakeOpenAI(models=("qwen-coder", "gpt-4o-mini"), api_key=LLM_KEY) as fake:
        env.setenv("LLM_BASE_URL", fake.base_url)
        env.setenv("LLM_API_KEY", LLM_KEY)
        env.setenv("LLM_REASONING_MODEL", "qwen-coder")
        yield fake


def preflight(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, dict]]:
    """Run the command in-process; (exit status, name -> item) from its --json, after
    checking the text report says the same and carries no secret."""
    code = cli.main(["preflight", *args, "--json"])
    out = capsys.readouterr().out
    items = {item["name"]: item for item in json.loads(out)["items"]}
    assert cli.main(["preflight", *args]) == code
    text = capsys.readouterr().out
    for secret in (TOKEN, GH_TOKEN, LLM_KEY, SECRET, os.environ.get("WEBHOOK_SECRET", "")):
        assert secret not in out and secret not in text
    width = max(map(len, items))
    lines = {line[5 : 5 + width].rstrip(): line for line in text.splitlines()[:-1]}
    assert set(lines) == set(items)
    for name, item in items.items():
        assert item["ok"] is (item["state"] != "FAIL")  # as doctor's items have it
        line = lines[name]
        assert line.startswith(item["state"])
        if item["state"] != "PASS":
            assert f"-- fix: {item['fix']}" in line
    return code, items


def states(items: dict[str, dict]) -> dict[str, str]:
    return {name: item["state"] for name, item in items.items()}


def test_a_sound_forgejo_deployment_passes_every_check(
    forge: FakeForgejo, llm: FakeOpenAI, capsys: pytest.CaptureFixture[str]
) -> None:
    llm.script(ANSWER, ANSWER)  # one completion for --json, one for the text report
    code, items = preflight(capsys)
    assert code == 0
    assert set(states(items).values()) == {"PASS"}, items
    assert "11.0.1" in items["forge"]["detail"]  # the forge's version
    assert "auto-review-bot" in items["token"]["detail"]  # whose token it is
    [models, *_] = [r for r in llm.requests if r.path.endswith("/chat/completions")]
    schema = models.json["response_format"]["json_schema"]
    assert schema["strict"] is True and models.json["model"] == "qwen-coder"
    # nothing was changed on the forge: the only write was the scope probe, refused 404
    assert {r.kind for r in forge.requests} == {"version", "user", "repo_edit"}


def test_a_wrong_forgejo_token_is_its_line_and_fix(
    forge: FakeForgejo, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env.setenv("AR_FORGEJO_TOKEN", "wrong-" + TOKEN)
    code, items = preflight(capsys)
    assert code == 6
    assert items["token"]["state"] == "FAIL" and "HTTP 401" in items["token"]["detail"]
    assert "AR_FORGEJO_TOKEN" in items["token"]["fix"] and "scopes" not in items
    assert items["model server"]["state"] == "SKIP"  # no LLM configured: not a failure


@pytest.mark.parametrize(
    ("scopes", "failed", "lacking"),
    [(("read:user",), "scopes", "write:repository"), (("write:repository",), "token", "read:user")],
)
def test_a_forgejo_token_without_a_scope_is_found_without_changing_anything(
    env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    scopes: tuple[str, ...],
    failed: str,
    lacking: str,
) -> None:
    with FakeForgejo(token=TOKEN, scopes=scopes) as fake:
        env.setenv("FORGEJO_BASE_URL", fake.base_url)
        env.setenv("AR_FORGEJO_TOKEN", TOKEN)
        code, items = preflight(capsys)
        assert [r.method for r in fake.requests if r.method != "GET"] in ([], ["PATCH"] * 2)
    assert code == 6 and items[failed]["state"] == "FAIL"
    assert lacking in items[failed]["detail"]
    assert "write:repository and read:user" in items[failed]["fix"]


def test_a_model_the_server_does_not_serve_is_its_line_and_fix(
    forge: FakeForgejo,
    llm: FakeOpenAI,
    env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env.setenv("LLM_REASONING_MODEL", "qwen-coder-32b")
    code, items = preflight(capsys)
    assert code == 6 and items["model"]["state"] == "FAIL"
    assert "'qwen-coder-32b' is not served" in items["model"]["detail"]
    assert "gpt-4o-mini, qwen-coder" in items["model"]["detail"]  # what it does serve
    assert "LLM_REASONING_MODEL" in items["model"]["fix"] and "completion" not in items
    assert not [r for r in llm.requests if r.method == "POST"]  # no completion was tried


def test_a_wrong_llm_key_and_a_schema_breaking_answer_fail(
    forge: FakeForgejo,
    llm: FakeOpenAI,
    env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    llm.script("Sure! Here is my review.", "Sure! Here is my review.")
    code, items = preflight(capsys)
    assert code == 6 and items["completion"]["state"] == "FAIL"
    assert "json_schema" in items["completion"]["fix"]
    env.setenv("LLM_API_KEY", "sk-wrong")
    code, items = preflight(capsys)
    assert items["model server"]["state"] == "FAIL" and "401" in items["model server"]["detail"]
    assert "LLM_API_KEY" in items["model server"]["fix"]


@pytest.mark.parametrize(
    ("secret", "why"),
    [
        ("s3cret", "6 bytes long, fewer than 32"),
        ("a" * 64, "bits per byte"),
        ("aaaaaaaaaaaabbbbbbbbbbbbcccccccccccc", "bits per byte"),
        ("passwordpasswordpasswordpassword", "pattern of 8 bytes repeated"),
        ("Tr0ub4dor&3-xyzTr0ub4dor&3-xyzTr0ub4dor&3-xyz", "pattern of 15 bytes repeated"),
    ],
)
def test_a_weak_webhook_secret_is_its_line_and_fix(
    forge: FakeForgejo,
    env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    secret: str,
    why: str,
) -> None:
    env.setenv("WEBHOOK_SECRET", secret)
    code, items = preflight(capsys)
    item = items["webhook secret"]
    assert code == 6 and item["state"] == "FAIL" and why in item["detail"]
    assert "openssl rand -hex 32" in item["fix"]


def test_the_secret_rule_passes_random_secrets() -> None:
    draw = random.Random(23)  # seeded: the same secrets on every run
    for _ in range(2000):
        assert weak_secret(draw.randbytes(32).hex().encode()) is None  # openssl rand -hex 32
        assert weak_secret(draw.randbytes(16).hex().encode()) is None  # 32 hex digits
        assert weak_secret(base64.b64encode(draw.randbytes(24))) is None


# --------------------------------------------------------------------------- GitHub


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return make_ca(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def hub(certs: CertFiles, env: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeGitHub]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.server_cert, certs.server_key)
    env.setenv("SSL_CERT_FILE", str(certs.ca_cert))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "app.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with FakeGitHub(ssl_context=context, tokens=(GH_TOKEN,), app_key=key) as fake:
        fake.install("acme", "demo")
        env.setenv("GITHUB_API_URL", fake.api_url)
        fake.key_file = pem  # type: ignore[attr-defined]
        yield fake


def test_a_classic_github_token_without_repo_is_found(
    hub: FakeGitHub, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env.setenv("GITHUB_TOKEN", GH_TOKEN)
    hub.token_scopes[GH_TOKEN] = "read:org, public_repo"
    code, items = preflight(capsys)
    assert code == 6 and "3.15.0" in items["forge"]["detail"]  # GHES names its version
    assert "'auto-review-bot'" in items["token"]["detail"]
    assert items["scopes"]["state"] == "FAIL" and "lacks repo" in items["scopes"]["detail"]
    hub.token_scopes[GH_TOKEN] = "repo, read:org"
    assert states(preflight(capsys)[1])["scopes"] == "PASS"
    del hub.token_scopes[GH_TOKEN]  # a fine-grained token: GitHub lists no scopes
    code, items = preflight(capsys)
    assert code == 0 and items["scopes"]["state"] == "WARN"


def test_a_wrong_github_token_is_its_line_and_fix(
    hub: FakeGitHub, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env.setenv("GITHUB_TOKEN", "ghp_" + "z" * 36)
    code, items = preflight(capsys)
    assert code == 6 and items["token"]["state"] == "FAIL"
    assert "HTTP 401" in items["token"]["detail"] and "GITHUB_TOKEN" in items["token"]["fix"]


def test_an_app_installation_without_a_permission_is_found(
    hub: FakeGitHub, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env.setenv("GITHUB_APP_ID", str(hub.app_id))
    env.setenv("GITHUB_APP_PRIVATE_KEY_FILE", str(hub.key_file))  # type: ignore[attr-defined]
    code, items = preflight(capsys)
    assert code == 0 and items["scopes"]["state"] == "PASS", items
    hub.permissions["statuses"] = "read"
    code, items = preflight(capsys)
    assert code == 6 and "acme lacks statuses:write" in items["scopes"]["detail"]
    assert "Commit statuses" in items["scopes"]["fix"]


# --------------------------------------------------------------------------- the single file


@needs_root
def test_preflight_runs_in_the_sandbox_with_serves_settings(app: Path, tmp_path: Path) -> None:
    with (
        FakeForgejo(token=TOKEN, scopes=("read:user",)) as fake,
        FakeOpenAI(models=("gpt-4o-mini",), api_key=LLM_KEY) as api,
    ):
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path),
            "AUTO_REVIEW_CACHE_DIR": str(tmp_path / "cache"),
            "AUTO_REVIEW_STATE_DIR": str(tmp_path / "state"),
            "AUTO_REVIEW_NETWORK": "host",  # the stand-ins listen on the host's loopback
            "FORGEJO_BASE_URL": fake.base_url,
            "AR_FORGEJO_TOKEN": TOKEN,
            "WEBHOOK_SECRET": "hunter2hunter2",
            "LLM_BASE_URL": api.base_url,
            "LLM_API_KEY": LLM_KEY,
            "LLM_REASONING_MODEL": "qwen-coder",
        }
        result = run_app(app, "preflight", env=env)
        assert result.returncode == 6, result.stderr
        width = len("webhook secret")
        lines = {line[5 : 5 + width].rstrip(): line for line in result.stdout.splitlines()[:-1]}
        assert lines["forge"].startswith("PASS") and "11.0.1" in lines["forge"]
        assert lines["scopes"].startswith("FAIL") and "write:repository" in lines["scopes"]
        assert (
            lines["webhook secret"].startswith("FAIL")
            and "14 bytes long" in lines["webhook secret"]
        )
        assert lines["model"].startswith("FAIL") and "'qwen-coder' is not served" in lines["model"]
        assert result.stdout.splitlines()[-1] == "3 problem(s): scopes, webhook secret, model"
        for secret in (TOKEN, LLM_KEY, "hunter2"):
            assert secret not in result.stdout + result.stderr
        # the token and the key reached the servers through the secrets pipe
        assert fake.of_kind("user")[0].headers["authorization"] == f"token {TOKEN}"
        assert api.requests == [] or all(
            r.headers.get("authorization") == f"Bearer {LLM_KEY}" for r in api.requests
        )
        env.update(
            AR_FORGEJO_TOKEN="wrong", WEBHOOK_SECRET=SECRET, LLM_REASONING_MODEL="gpt-4o-mini"
        )
        api.script(ANSWER)
        result = run_app(app, "preflight", "--json", env=env)
        assert result.returncode == 6, result.stderr
        doc = json.loads(result.stdout)
        got = {item["name"]: item["state"] for item in doc["items"]}
        assert doc["ok"] is False and got["token"] == "FAIL" and got["completion"] == "PASS"
