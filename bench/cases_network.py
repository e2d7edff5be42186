"""The network: AUTO_REVIEW_NETWORK=isolated vs host, what slirp4netns adds to a start,
a `serve` start and a clone (root only: the git server runs in a test host).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from measure import (
    APP_PYTHON,
    ROOT,
    ReferenceFailed,
    Row,
    bench_users,
    error_row,
    fmt,
    ratio,
    run,
    timed,
    timed_together,
)
from sandbox import Sandbox


def free_port() -> int:
    """A loopback port nothing listens on now (a fixed one collides with another run)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_start(app: Path, env: dict[str, str], user: str | None) -> None:
    """`serve` from spawn to "serving on", then a SIGTERM stop (not timed by the caller's
    reading: the stop happens after the line is seen)."""
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen([*APP_PYTHON, str(app), "serve"], env=env, stdout=subprocess.PIPE,
                                stderr=log, text=True, user=user, group=user,
                                extra_groups=[] if user else None)  # fmt: skip
        assert proc.stdout is not None
        for line in proc.stdout:
            if "serving on" in line:
                break
        else:
            log.seek(0)
            said = [line.strip() for line in log if line.strip()]
            cause = said[-1] if said else "no message"
            raise ReferenceFailed(f"serve exited {proc.wait()} before serving: {cause}")
        proc.terminate()
        proc.wait(timeout=60)


def network_rows(app: Path, rounds: int, base: Path) -> list[Row]:
    """AUTO_REVIEW_NETWORK=isolated vs host, same run, root and rootless: warm `check` and
    `probe exit 0` (no user-mode stack: only the namespace) against a bare `runc run`;
    what slirp4netns adds to a start (`probe connect`), to a `serve` start and to a clone
    from a TLS git server on a test host in a network namespace of its own."""
    if os.geteuid() != 0:
        return []
    sys.path.insert(0, str(ROOT / "tests"))
    from gitserver import GitHttpsServer, make_ca, make_repo
    from testhost import TestHost

    certs = make_ca(base / "net-certs", hosts=("10.253.9.2",))
    make_repo(base / "net-repos" / "demo.git", {"README.md": "hello\n"})
    subprocess.run(["chmod", "-R", "a+rX", str(base / "net-certs"), str(base / "net-repos")],
                   check=True)  # fmt: skip
    rows: list[Row] = []
    with TestHost("b", 9) as host:
        server = GitHttpsServer(base / "net-repos", certs, host=host.addr, hostname=host.addr)
        host.inside(server.start)
        try:
            cases = {
                "check": ("check",),
                "probe exit 0": ("probe", "exit", "0"),
                "probe connect": ("probe", "connect", f"tcp:{host.addr}:{server.port}"),
                "clone": ("probe", "clone", server.repo_url("demo")),
            }
            for user in bench_users():
                rows += _network_rows_as(user, app, base, cases, str(certs.ca_cert), rounds)
        finally:
            server.stop()
    return rows


def _network_rows_as(
    user: str | None, app: Path, base: Path, cases: dict, ca: str, rounds: int
) -> list[Row]:
    mode = "rootless" if user else "root"
    work = base / f"net-{mode}"
    work.mkdir(mode=0o755)
    target = app
    if user:
        target = work / "auto-review"
        shutil.copy(app, target)
        os.chmod(target, 0o755)
        os.chown(work, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
    box = Sandbox(target, work, user)
    times: dict[tuple[str, str], list[float]] = {}
    failed: dict[tuple[str, str], ReferenceFailed] = {}
    bare: dict[str, list[float] | ReferenceFailed] = {}
    nets = ("isolated", "host")
    envs = {net: dict(box.env, AUTO_REVIEW_NETWORK=net, AUTO_REVIEW_CA_FILE=ca) for net in nets}
    for name, args in cases.items():  # both networks and the bare run, in turn
        cmd = [*APP_PYTHON, str(target), *args]
        fns = [lambda c=cmd, e=envs[net]: run(c, e, user) for net in nets]
        for fn in fns:  # untimed: the launcher makes the state dir that the bare run binds
            fn()
        if name in ("check", "probe exit 0"):
            try:
                fns.append(box.bare_verified(*args))
            except ReferenceFailed as exc:
                bare[name] = exc
        samples = timed_together(fns, rounds)
        times.update({(name, net): samples[i] for i, net in enumerate(nets)})
        if len(samples) > len(nets):
            bare[name] = samples[-1]
    for net in nets:
        env = envs[net]
        serve_env = dict(env, AR_GATEWAY_BIND=f"127.0.0.1:{free_port()}", WEBHOOK_SECRET="x" * 32)
        serve_env.update(FORGEJO_BASE_URL="https://forge.invalid", AR_FORGEJO_TOKEN="t")
        try:
            times[("serve start", net)] = timed(
                lambda e=serve_env: serve_start(target, e, user), max(3, rounds // 3)
            )
        except ReferenceFailed as exc:
            failed[("serve start", net)] = exc
    rows: list[Row] = []
    for name in ("check", "probe exit 0"):
        reference = bare[name]
        if isinstance(reference, ReferenceFailed):
            rows += [error_row(f"warm `{name}` ({mode}, {n})", reference) for n in nets]
            continue
        for net in nets:
            ours = times[(name, net)]
            goal = "<= 1.25x" if (name, net) == ("check", "isolated") else ""
            ref = f"bare `runc run`: {fmt(reference)}"
            rows.append(
                (f"warm `{name}` ({mode}, {net})", fmt(ours), ref, ratio(ours, reference), goal)
            )
    for name in ("probe connect", "serve start", "clone"):
        if (name, "isolated") in failed or (name, "host") in failed:
            exc = failed.get((name, "isolated")) or failed[(name, "host")]
            rows.append(error_row(f"{name} ({mode}, isolated)", exc))
            continue
        iso, hst = times[(name, "isolated")], times[(name, "host")]
        extra = (statistics.median(iso) - statistics.median(hst)) * 1000
        rows.append((f"{name} ({mode}, isolated)", fmt(iso), f"host network: {fmt(hst)}",
                     ratio(iso, hst), f"the stack adds {extra:+.1f} ms"))  # fmt: skip
    return rows
