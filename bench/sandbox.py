"""The launcher's sandbox next to a bare `runc run` of the very same rootfs and config."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from measure import APP_PYTHON, ROOT, ReferenceFailed, manifest_of, run


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
        run([*APP_PYTHON, str(app), "-q", "cache", "prepare"], self.env, user)
        self.bundle = work / "bare-bundle"
        self.runc_root = work / "bare-runc"

    def launcher(self, *args: str) -> Callable[[], None]:
        return lambda: run([*APP_PYTHON, str(self.app), *args], self.env, self.user)

    def bare_runc(
        self, *args: str, runtime: tuple[str, ...] = (), check: bool = False
    ) -> Callable[[], None]:
        """`runc run` (or `runtime`'s) of the config the launcher generates, without
        the launcher. Not checked by default: `check` fails its host-fds item there
        (no launcher, no lifeline); see bare_verified."""
        argv = self._bare(args, runtime)
        counter = iter(range(10**6))
        return lambda: run(argv(f"bench-{next(counter)}"), None, self.user, check=check)

    def bare_verified(self, *args: str, runtime: tuple[str, ...] = ()) -> Callable[[], None]:
        """bare_runc(*args), shown first to do its work (ReferenceFailed naming the cause
        otherwise): bare `check` reports every item passed but host-fds, which needs the
        launcher's lifeline; any other command exits 0. Then checked on every run."""
        shown = " ".join(args)
        if args == ("check",):
            code, out, err = self.capture(self._bare(("check", "--json"), runtime)("verify"))
            try:
                failed = [i["name"] for i in json.loads(out)["items"] if not i["ok"]]
            except (ValueError, KeyError, TypeError):
                raise ReferenceFailed(
                    f"bare `check` reported nothing (exit {code}): {err}"
                ) from None
            if failed != ["host-fds"]:
                raise ReferenceFailed(f"bare `check` failed {', '.join(failed)}: {err}")
            return self.bare_runc(*args, runtime=runtime)
        code, _out, err = self.capture(self._bare(args, runtime)("verify"))
        if code != 0:
            raise ReferenceFailed(f"bare `{shown}` exited {code}: {err}")
        return self.bare_runc(*args, runtime=runtime, check=True)

    def verified(self, *args: str, env: dict[str, str] | None = None) -> Callable[[], None]:
        """The launcher's `args`, shown first to exit 0 (ReferenceFailed otherwise)."""
        cmd = [*APP_PYTHON, str(self.app), *args]
        code, _out, err = self.capture(cmd, env or self.env)
        if code != 0:
            raise ReferenceFailed(f"auto-review `{' '.join(args)}` exited {code}: {err}")
        return lambda: run(cmd, env or self.env, self.user)

    def capture(self, cmd: list[str], env: dict[str, str] | None = None) -> tuple[int, str, str]:
        """Run `cmd` as the box's user once: (exit code, stdout, stderr's last line). The
        output goes to files the user owns (a runtime chowns its stdio to the container's
        root, which rootless is that user)."""
        out, err = self.work / "capture.out", self.work / "capture.err"
        entry = pwd.getpwnam(self.user) if self.user else None
        with open(out, "w") as fo, open(err, "w") as fe:
            if entry:
                for path in (out, err):
                    os.chown(path, entry.pw_uid, entry.pw_gid)
            code = subprocess.run(
                cmd, env=env, stdin=subprocess.DEVNULL, stdout=fo, stderr=fe,
                user=self.user, group=self.user, extra_groups=[] if self.user else None,
            ).returncode  # fmt: skip
        lines = [line for line in err.read_text(errors="replace").splitlines() if line.strip()]
        return code, out.read_text(errors="replace"), lines[-1][:200] if lines else "no message"

    def _bare(self, args: tuple[str, ...], runtime: tuple[str, ...]) -> Callable[[str], list[str]]:
        """Write the bare bundle's config.json for `args`; container id -> the argv."""
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
        fresh_state = not (self.work / "state").exists()  # the bind needs its source
        state_root = self.runc_root.with_name(f"bare-{runtime[0]}") if runtime else self.runc_root
        state_root.mkdir(exist_ok=True, mode=0o700)
        entry = pwd.getpwnam(self.user) if self.user else None
        uid, gid = (entry.pw_uid, entry.pw_gid) if entry else (0, 0)
        config = build_config(spec)
        if self.user:  # the config must map *that* user's ids, not ours (nor its uid as gid)
            config["linux"]["uidMappings"][0]["hostID"] = uid
            config["linux"]["gidMappings"][0]["hostID"] = gid
        (self.bundle / "config.json").write_text(json.dumps(config))
        if fresh_state:  # else the launcher made it, for the sandbox's user
            (self.work / "state").mkdir()
            os.chown(self.work / "state", uid, gid)
        for path in (self.bundle, state_root):
            os.chown(path, uid, gid)
        command = runtime or (shutil.which("runc") or "runc",)
        root, bundle = str(state_root), str(self.bundle)
        return lambda ident: [*command, "--root", root, "run", "--bundle", bundle, ident]
