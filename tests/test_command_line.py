"""What the command line refuses before anything is unpacked: a bad AUTO_REVIEW_* setting
is one line with the fix and exit 78, on a cold cache that stays empty. Real single file.
"""

from __future__ import annotations

from pathlib import Path

from conftest import run_app


def test_a_bad_setting_is_78_at_once(app: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    base = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "AUTO_REVIEW_CACHE_DIR": str(cache)}
    for name, value in (("AUTO_REVIEW_LOCK_TIMEOUT", "abc"), ("AUTO_REVIEW_BARE", "yes"),
                        ("AUTO_REVIEW_HOST_LOOPBACK", "true"), ("AUTO_REVIEW_NETWORK", "bridge"),
                        ("AUTO_REVIEW_CONTAINER_ID", "-x")):  # fmt: skip
        for args in (("check",), ("cache", "prepare")):
            result = run_app(app, *args, env={**base, name: value})
            assert result.returncode == 78, (name, args, result.stderr)
            [line] = result.stderr.splitlines()
            assert f"{name}={value!r}" in line and " -- " in line  # the value, then the fix
            assert not cache.exists(), (name, args)
