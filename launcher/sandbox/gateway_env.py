"""The environment the gateway sees: the manifest's, plus an explicit allowlist from the host.

Nothing else of the host environment crosses into the sandbox; the secret ones
go through a pipe (launcher.sandbox.hostlink), never the process environment.
Values are never logged: only names appear in messages.

One secret is a host file: GITHUB_APP_PRIVATE_KEY_FILE names the GitHub App's
private key on the host; the launcher reads it (bounded, see launcher.hostfile)
and sends its content as GITHUB_APP_PRIVATE_KEY through the secrets pipe. The
path never enters the sandbox, and the key needs no copy in the state dir.
"""

from __future__ import annotations

import os

# Gateway configuration operators set on the host; only these are passed in.
ALLOWED = (
    "WEBHOOK_SECRET",
    "FORGEJO_BASE_URL",
    "AR_FORGEJO_TOKEN",
    "AR_GATEWAY_BIND",
    "AR_CI_REVIEW_TOKEN",
    "AR_REVIEW_CONCURRENCY",
    "AR_SEVERITY_FLOOR",
    "AR_BOT_NAME",
    "AR_TRIGGER",
    "AR_QUEUE_MAX",
    "AR_SHUTDOWN_GRACE",
    "AR_REQUEST_TIMEOUT",
    "AR_QUEUE_URL",  # a secret (its password): sent through the pipe, see hostlink
    "AR_QUEUE_LEASE",
    "AR_QUEUE_POLL_INTERVAL",
    "AR_RECONCILE_INTERVAL",
    "AR_RECONCILE_REPOS",
    "LLM_BASE_URL",
    "LLM_API_KEY",
    "LLM_REASONING_MODEL",
    "LLM_TIMEOUT",
    "LLM_TEMPERATURE",
    "LLM_MAX_TOKENS",
    "LLM_DEADLINE",
    "LLM_VERIFIER_MODEL",
    "AR_VERIFIER",
    "AR_LLM_CONTEXT_TOKENS",
    "AR_LLM_MAX_CALLS",
    "GITHUB_API_URL",
    "GITHUB_TOKEN",
    "GITHUB_APP_ID",  # its key: GITHUB_APP_PRIVATE_KEY, read from APP_KEY_FILE (below)
    "GITHUB_MIN_ASSOCIATION",
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "NO_PROXY",
    "https_proxy",
    "http_proxy",
    "no_proxy",
    "TZ",
)

# The host file of the GitHub App's private key, and the secret its content becomes.
APP_KEY_FILE = "GITHUB_APP_PRIVATE_KEY_FILE"
APP_KEY = "GITHUB_APP_PRIVATE_KEY"
# An RSA key of 16384 bits (OpenSSL's largest modulus) is under 13 KiB of PEM; GitHub's
# are 2048 bits, 1.7 KB. A larger cap would let a bogus key cost seconds of key checks
# at every start, and come close to the secrets pipe's 64 KiB.
APP_KEY_MAX = 16 << 10


def sandbox_env(manifest_env: list[str], isolation: str, extra: dict[str, str]) -> list[str]:
    """KEY=VALUE list: manifest defaults, allowed host variables, then launcher-set ones."""
    env = dict(item.split("=", 1) for item in manifest_env)
    for name in ALLOWED:
        value = os.environ.get(name)
        if value is not None:
            env[name] = value
    env["AUTO_REVIEW_ISOLATION"] = isolation
    env.update(extra)
    return [f"{k}={v}" for k, v in env.items()]


def sandbox_env_and_secrets(
    manifest_env: list[str], isolation: str, extra: dict[str, str]
) -> tuple[list[str], dict[str, str]]:
    """sandbox_env without the secret variables, and those apart (for the secrets pipe),
    with the GitHub App's key read from its host file."""
    from launcher.sandbox.hostlink import SECRET_NAMES

    env, secrets = [], {}
    for item in sandbox_env(manifest_env, isolation, extra):
        name, _, value = item.partition("=")
        if name in SECRET_NAMES:
            secrets[name] = value
        else:
            env.append(item)
    secrets.update(github_app_key())
    return env, secrets


def github_app_key() -> dict[str, str]:
    """{GITHUB_APP_PRIVATE_KEY: PEM} from the host file GITHUB_APP_PRIVATE_KEY_FILE names,
    or {} when it is unset; ConfigError if the file is not a PEM private key."""
    path = os.environ.get(APP_KEY_FILE, "").strip()
    if not path:
        return {}
    from launcher.errors import ConfigError
    from launcher.hostfile import read_regular_file

    fix = f"point {APP_KEY_FILE} at the App's private key, the .pem file GitHub generated"
    pem = read_regular_file(APP_KEY_FILE, path, APP_KEY_MAX, fix)
    if not is_pem_private_key(pem):
        raise ConfigError(f"{APP_KEY_FILE}={path} holds no PEM private key", fix)
    return {APP_KEY: os.fsdecode(pem)}


def is_pem_private_key(data: bytes) -> bool:
    """True if `data` has a -----BEGIN ... PRIVATE KEY----- line and its END line, and
    no NUL byte (which the secrets pipe could not carry)."""
    if b"\0" in data:
        return False
    lines = [line.strip() for line in data.splitlines()]
    begins = [line[len(b"-----BEGIN ") :] for line in lines if line.startswith(b"-----BEGIN ")]
    ends = {line[len(b"-----END ") :] for line in lines if line.startswith(b"-----END ")}
    return any(label.endswith(b"PRIVATE KEY-----") and label in ends for label in begins)
