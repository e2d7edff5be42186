"""Other runtimes: warm `check` vs the exported image under podman, and under gVisor's
runsc vs runc (root only, when podman and runsc are installed).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from measure import (
    APP_PYTHON,
    ROOT,
    ReferenceFailed,
    Row,
    error_row,
    fmt,
    manifest_of,
    ratio,
    run,
    timed_together,
)
from sandbox import Sandbox


def podman_line(seccomp: Path, volume: str, image: str) -> list[str]:
    """docs/IMAGE.md's `podman run` line with this run's profile, volume and image, plus
    what this host needs (the runtime our discovery picks, rlimits within our hard ones)."""
    import re
    import shlex

    sys.path.insert(0, str(ROOT))
    from launcher.sandbox import runtime

    text = (ROOT / "docs" / "IMAGE.md").read_text()
    words = shlex.split(re.search(r"^(podman run --rm --read-only .*)$", text, re.M).group(1))
    out = []
    for word in words[2:-2]:
        word = re.sub(r"^seccomp=.*", f"seccomp={seccomp}", word)
        out.append(
            re.sub(r"^[\w.-]+:/var/lib/auto-review$", f"{volume}:/var/lib/auto-review", word)
        )
    host = ["--runtime", runtime.discover(rootless=False).path,
            "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=1024:1024"]  # fmt: skip
    return ["podman", "run", *host, *out, image]


def runtime_rows(app: Path, rounds: int, base: Path) -> list[Row]:
    """Warm `check` through auto-review against `podman run --rm` of the exported image
    with the documented line, and under gVisor's runsc against runc (root only)."""
    if os.geteuid() != 0 or not shutil.which("podman") or not shutil.which("runsc"):
        return []
    work = base / "runtimes"
    work.mkdir(mode=0o755)
    env = dict(os.environ, AUTO_REVIEW_CACHE_DIR=str(work / "cache"),
               AUTO_REVIEW_STATE_DIR=str(work / "state"))  # fmt: skip
    env.pop("AUTO_REVIEW_BUNDLE", None)
    version = manifest_of(app)["version"]
    image = f"localhost/auto-review-bench:{version}"
    run([*APP_PYTHON, str(app), "bundle", "export", "--docker-archive", str(work / "img.tar")], env)
    run([*APP_PYTHON, str(app), "bundle", "export", "--seccomp", str(work / "seccomp.json")], env)
    run(["podman", "load", "-i", str(work / "img.tar")])
    run(["podman", "tag", f"localhost/auto-review:{version}", image])
    volume = f"ar-bench-{os.getpid()}"
    line = [*podman_line(work / "seccomp.json", volume, image), "check"]
    rows: list[Row] = []
    try:
        run(line, check=False)  # the volume's first creation is not timed
        ours, ref = timed_together(
            [lambda: run([*APP_PYTHON, str(app), "-q", "check"], env, check=False),
             lambda: run(line, check=False)],
            rounds,
        )  # fmt: skip
        podman_ref = f"`podman run --rm` (IMAGE.md line): {fmt(ref)}"
        rows.append(("warm `check` (root) vs the image in podman", fmt(ours), podman_ref,
                     ratio(ours, ref), ""))  # fmt: skip
        gv = dict(env, AUTO_REVIEW_RUNTIME="runsc")
        rc = dict(env, AUTO_REVIEW_RUNTIME="runc")
        for args in (("check",), ("probe", "exit", "0")):
            run([*APP_PYTHON, str(app), "-q", *args], gv, check=False)
            ours, ref = timed_together(
                [lambda a=args: run([*APP_PYTHON, str(app), "-q", *a], gv, check=False),
                 lambda a=args: run([*APP_PYTHON, str(app), "-q", *a], rc, check=False)],
                rounds,
            )  # fmt: skip
            rows.append((f"warm `{' '.join(args)}` under runsc (root)", fmt(ours),
                         f"the same under runc: {fmt(ref)}", ratio(ours, ref), ""))  # fmt: skip
        # gVisor's own start, without the launcher: the same config under both runtimes
        (work / "bare").mkdir(mode=0o700)
        bare = Sandbox(app, work / "bare", None)
        probe = ("probe", "exit", "0")
        case = "bare `runsc run` of `probe exit 0` (root)"
        try:
            gvisor = bare.bare_verified(*probe, runtime=("runsc", "--network=none"))
            gvisor_times, runc_bare = timed_together([gvisor, bare.bare_verified(*probe)], rounds)
        except ReferenceFailed as exc:
            rows.append(error_row(case, exc, "gVisor's start alone"))
        else:
            rows.append((case, fmt(gvisor_times), f"bare `runc run`: {fmt(runc_bare)}",
                         ratio(gvisor_times, runc_bare), "gVisor's start alone"))  # fmt: skip
    finally:
        run(["podman", "volume", "rm", "-f", volume], check=False)
        run(["podman", "rmi", "-f", image], check=False)
    return rows
