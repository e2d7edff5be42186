"""Per-user runtime directories: the runtime's state root and one bundle dir per run.

    $XDG_RUNTIME_DIR/auto-review/   (else <cache>/v1/run/), 0700
        <runtime>/                  --root of runc/crun/youki
        runs/auto-review-<pid>/     config.json (0600), runtime.log, extra files

A run's id carries the launcher's pid, so a later launch can tell which runs
were left behind by a launcher that died, delete their containers and remove
their dirs.
"""

from __future__ import annotations

import os
import stat

from launcher.cache.paths import Layout, check_level, make_private_dirs
from launcher.cache.root import owned_dir_problem
from launcher.jsonwrite import dumps
from launcher.sandbox.runtime import Runtime

PREFIX = "auto-review-"

TYPE_CHECKING = False  # typing costs milliseconds on every warm start
if TYPE_CHECKING:
    from typing import Any


def xdg_problem(xdg: str) -> str | None:
    """Why XDG_RUNTIME_DIR cannot hold our run state (so the cache does), or None."""
    if not os.path.isabs(xdg):
        return "not an absolute path"
    try:
        st = os.lstat(xdg)
    except OSError as exc:
        return f"not usable ({exc.strerror})"
    problem = owned_dir_problem(st)  # the rule every cache level passes
    if problem:
        return problem
    if st.st_mode & 0o077:  # and private, as XDG requires of it
        return f"mode {stat.S_IMODE(st.st_mode):04o}, not private (0700)"
    return None


def base_dir(layout: Layout) -> str:
    """$XDG_RUNTIME_DIR/auto-review when XDG_RUNTIME_DIR is ours and private, else in the cache."""
    xdg = os.environ.get("XDG_RUNTIME_DIR", "")
    if xdg and xdg_problem(xdg) is None:
        return os.path.join(xdg, "auto-review")
    return layout.run


class Run:
    """One run's bundle directory."""

    __slots__ = ("container_id", "path")

    def __init__(self, path: str, container_id: str) -> None:
        self.path = path
        self.container_id = container_id

    @property
    def log(self) -> str:
        return os.path.join(self.path, "runtime.log")

    def write_config(self, config: dict[str, Any]) -> None:
        """config.json, 0600."""
        path = os.path.join(self.path, "config.json")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(dumps(config))

    def runtime_error(self) -> str | None:
        """The runtime's own last error message, if it logged one (JSON lines)."""
        try:
            with open(self.log) as fh:
                lines = fh.read().splitlines()
        except OSError:
            return None
        import json  # only after a failure

        for line in reversed(lines):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if str(entry.get("level", "")).lower() in ("error", "fatal", "panic"):
                return str(entry.get("msg", "")).strip() or None
        return None

    def remove(self) -> None:
        """Delete the run dir, never following a symlink (one planted at the path itself
        is unlinked); what cannot be deleted is a warning, not a failed start."""
        from launcher.cache.tree import remove_tree, warn

        remove_tree(self.path, on_error=warn)


class RunDirs:
    """The runtime dirs of this user for one runtime flavour."""

    __slots__ = ("base", "runs", "state_root")

    def __init__(self, base: str, state_root: str, runs: str) -> None:
        self.base = base
        self.state_root = state_root
        self.runs = runs

    @classmethod
    def open(cls, layout: Layout, runtime: Runtime) -> RunDirs:
        base = base_dir(layout)
        dirs = cls(base, os.path.join(base, runtime.name), os.path.join(base, "runs"))
        for path in (dirs.base, dirs.state_root, dirs.runs):
            if os.path.isdir(path) and not os.path.islink(path):
                check_level(path, "runtime directory")
            else:
                make_private_dirs(path, "runtime directory")
        return dirs

    def new_run(self, runtime: Runtime, container_id: str | None = None) -> Run:
        """A fresh run dir, named after this launcher's pid unless a fixed id is given.

        A fixed id (a service that runs one instance) may still name a container left
        by a killed run: that one is deleted first.
        """
        container_id = container_id or f"{PREFIX}{os.getpid()}"
        path = os.path.join(self.runs, container_id)
        if os.path.lexists(path):  # a killed run with this id, or our recycled pid
            self.delete(runtime, container_id)
            Run(path, container_id).remove()
        os.mkdir(path, 0o700)
        return Run(path, container_id)

    def stale_runs(self) -> list[Run]:
        """Runs whose launcher is gone."""
        out = []
        for name in os.listdir(self.runs):
            pid = name[len(PREFIX) :]
            if name.startswith(PREFIX) and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                out.append(Run(os.path.join(self.runs, name), name))
        return out

    def clean_stale(self, runtime: Runtime) -> int:
        """Delete containers and run dirs left by launchers that died. Returns how many."""
        stale = self.stale_runs()
        for run in stale:
            self.delete(runtime, run.container_id)
            run.remove()
        return len(stale)

    def kill(self, runtime: Runtime, container_id: str, signo: int) -> bool:
        """`<runtime> kill <id> <signal>`: a signal to the container's init, quietly; False
        when the runtime could not deliver it (no such container yet, or any more)."""
        import subprocess

        return (
            subprocess.run(
                runtime.command("--root", self.state_root, "kill", container_id, str(signo)),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=False,
            ).returncode
            == 0
        )

    def delete(self, runtime: Runtime, container_id: str) -> None:
        """`<runtime> delete --force <id>`: kill and forget a container, quietly."""
        import subprocess

        subprocess.run(
            runtime.command("--root", self.state_root, "delete", "--force", container_id),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
