"""The launcher's sandbox next to a bare `runc run` of the very same rootfs and config."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from measure import PYTHON, ROOT, manifest_of, run


class Sandbox:
    """A user's cache/state dirs plus a bare runc bundle of the very same rootfs and config."""

    def __init__(self, app: Path, work: Path, user: str | None) -> None:
        self.app, self.user, self.work = app, user, work
        self.env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "HOME": str(work),
            "AUTO_REVIEW_CACHE_DIR": str(work / "cache"),
            "AUTO_REVIEW_STATE_DIR": str(work / "state"),
        }
        run([PYTHON, str(app), "-q", "cache", "prepare"], self.env, user)
        self.bundle = work / "bare-bundle"
        self.runc_root = work / "bare-runc"

    def launcher(self, *args: str) -> Callable[[], None]:
        return lambda: run([PYTHON, str(self.app), *args], self.env, self.user)

    def bare_runc(
        self, *args: str, runtime: tuple[str, ...] = (), check: bool = False
    ) -> Callable[[], None]:
        """`runc run` (or `runtime`'s) of the config the launcher generates, without
        the launcher. Not checked by default: `check` fails its host-fds item there
        (no launcher, no lifeline)."""
        sys.path.insert(0, str(ROOT))
        from launcher.sandbox.config import RunSpec, build_config

        m = manifest_of(self.app)
        digest_dir = "sha256-" + m["digest"].split(":", 1)[1]
        rootfs = self.work / "cache" / "v1" / "bundles" / digest_dir / "rootfs"
        spec = RunSpec(
            rootfs=str(rootfs),
            manifest=m,
            args=list(args),
            env=list(m["process"]["env"]),
            state_dir=str(self.work / "state"),
            rootless=self.user is not None,
            resolv_conf="/etc/resolv.conf",
        )
        self.bundle.mkdir(exist_ok=True)
        state_root = self.runc_root.with_name(f"bare-{runtime[0]}") if runtime else self.runc_root
        state_root.mkdir(exist_ok=True, mode=0o700)
        uid = pwd.getpwnam(self.user).pw_uid if self.user else 0
        config = build_config(spec)
        if self.user:  # the config must map *that* user's uid, not ours
            for key in ("uidMappings", "gidMappings"):
                config["linux"][key][0]["hostID"] = uid
        (self.bundle / "config.json").write_text(json.dumps(config))
        for path in (self.bundle, state_root):
            os.chown(path, uid, uid)
        counter = iter(range(10**6))
        command = runtime or (shutil.which("runc") or "runc",)
        return lambda: run(
            [
                *command,
                "--root",
                str(state_root),
                "run",
                "--bundle",
                str(self.bundle),
                f"bench-{next(counter)}",
            ],
            None,
            self.user,
            check=check,
        )
