"""The environment the gateway sees: the manifest's, plus an explicit allowlist from the host.

Nothing else of the host environment crosses into the sandbox; the secret ones
go through a pipe (launcher.hostlink), never the process environment. Values are
never logged: only names appear in messages.
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
    "AR_QUEUE_MAX",
    "AR_SHUTDOWN_GRACE",
    "AR_REQUEST_TIMEOUT",
    "LLM_BASE_URL",
    "LLM_API_KEY",
    "LLM_REASONING_MODEL",
    "LLM_TIMEOUT",
    "LLM_TEMPERATURE",
    "LLM_MAX_TOKENS",
    "LLM_DEADLINE",
    "GITHUB_API_URL",
    "GITHUB_TOKEN",
    "GITHUB_APP_ID",  # its key is read from the state dir (github-app.pem) inside
    "GITHUB_MIN_ASSOCIATION",
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "NO_PROXY",
    "https_proxy",
    "http_proxy",
    "no_proxy",
    "TZ",
)


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
    """sandbox_env without the secret variables, and those apart (for the secrets pipe)."""
    from launcher.hostlink import SECRET_NAMES

    env, secrets = [], {}
    for item in sandbox_env(manifest_env, isolation, extra):
        name, _, value = item.partition("=")
        if name in SECRET_NAMES:
            secrets[name] = value
        else:
            env.append(item)
    return env, secrets
