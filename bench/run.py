#!/usr/bin/env python3
"""Benchmarks: one markdown table of medians (min-max) and ratios to a reference
measured in the same run. No thresholds are asserted; the goals are printed.

    python3 bench/run.py [--quick] [--app dist/auto-review]

Cases: warm start vs a bare `runc run` of the same rootfs and command (root, and
rootless when the user `ar-rootless` exists); the warm path vs `python3 -I -S -c
pass`; cold unpack vs `zstd -dc | tar -x`, vs the same followed by `sync -f` (our
cold path syncs, tar does not), and its peak RSS; 16 concurrent cold
starts vs one; size vs xz -9 and gzip -9 of the same tar; for context, the same
trivial entry point packed with shiv and with PEX (pinned, installed into a
throwaway venv), warm and cold, vs `python3 -I -S -c pass`.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
ROOTLESS_USER = "ar-rootless"
# The reference zipapp tools, installed by the script into a throwaway venv.
SHIV_VERSION = "1.0.8"
PEX_VERSION = "2.105.2"
PINS = (f"shiv=={SHIV_VERSION}", f"pex=={PEX_VERSION}")

Row = tuple[str, str, str, str, str]


def timed(
    fn: Callable[[], object], rounds: int, setup: Callable[[], object] | None = None
) -> list[float]:
    """Wall-clock seconds of `fn` over `rounds` runs (setup excluded)."""
    out = []
    for _ in range(rounds):
        if setup:
            setup()
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


def fmt(samples: list[float], unit: str = "ms") -> str:
    scale = 1000 if unit == "ms" else 1
    med = statistics.median(samples) * scale
    return f"{med:.1f} {unit} ({min(samples) * scale:.1f}-{max(samples) * scale:.1f})"


def ratio(ours: list[float], ref: list[float]) -> str:
    return f"{statistics.median(ours) / statistics.median(ref):.2f}x"


def run(
    cmd: list[str], env: dict[str, str] | None = None, user: str | None = None, check: bool = True
) -> None:
    subprocess.run(
        cmd,
        env=env,
        check=check,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        user=user,
        group=user,
        extra_groups=[] if user else None,
    )


def ensure_app(path: Path) -> Path:
    if not path.exists():
        print(f"building {path} ...", file=sys.stderr)
        subprocess.run(
            [sys.executable, str(ROOT / "build.py"), "--out", str(path)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return path


def manifest_of(app: Path) -> dict:
    with zipfile.ZipFile(app) as zf:
        return json.loads(zf.read("bundle/bundle.json"))


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


def warm_rows(app: Path, rounds: int, base: Path) -> list[Row]:
    rows: list[Row] = []
    users: list[str | None] = [None] if os.geteuid() == 0 else []
    try:
        pwd.getpwnam(ROOTLESS_USER)
        users.append(ROOTLESS_USER)
    except KeyError:
        pass
    for user in users:
        work = base / f"warm-{user or 'root'}"
        work.mkdir(mode=0o755)
        if user:
            shutil.copy(app, work / "auto-review")
            os.chmod(work / "auto-review", 0o755)
            os.chown(work, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
            box = Sandbox(work / "auto-review", work, user)
        else:
            box = Sandbox(app, work, None)
        mode = "rootless" if user else "root"
        for args, goal in ((("check",), "<= 1.25x"), (("probe", "exit", "0"), "")):
            ours = timed(box.launcher(*args), rounds)
            ref = timed(box.bare_runc(*args), rounds)
            rows.append(
                (
                    f"warm `{' '.join(args)}` ({mode})",
                    fmt(ours),
                    f"bare `runc run`: {fmt(ref)}",
                    ratio(ours, ref),
                    goal,
                )
            )
    return rows


def warm_path_row(app: Path, rounds: int, base: Path) -> Row:
    """Interpreter start + launcher imports (from the cached code, as the zipapp's
    __main__ does) + the warm acquire (lock, marker), vs a bare interpreter."""
    work = base / "warm-path"
    env = dict(os.environ, AUTO_REVIEW_CACHE_DIR=str(work / "cache"))
    run([PYTHON, str(app), "-q", "cache", "prepare"], env)
    [code] = [p for p in (work / "cache" / "v1" / "code").iterdir() if p.is_dir()]
    # what the zipapp's __main__ does (launcher.bootstrap), then the warm acquire
    boot = (
        "import sys; sys.path[:0] = [sys.argv[1]]; from launcher import bootstrap;"
        " bootstrap.CODE_ID = sys.argv[2]; bootstrap.use_cached_code();"
        " from launcher.cache import warm; warm.acquire(True)"
    )
    cmd = [PYTHON, "-I", "-S", "-c", boot, str(app), code.name]
    ours = timed(lambda: run(cmd, env), rounds)
    ref = timed(lambda: run([PYTHON, "-I", "-S", "-c", "pass"]), rounds)
    extra = (statistics.median(ours) - statistics.median(ref)) * 1000
    return (
        "warm path (launcher imports + lock + marker)",
        fmt(ours),
        f"`python3 -I -S -c pass`: {fmt(ref)}",
        f"+{extra:.1f} ms",
        "<= +8 ms",
    )


def peak_rss_mb(cmd: list[str], env: dict[str, str]) -> float:
    """Peak RSS of a child command, in MB (ru_maxrss of a fresh wrapper's children)."""
    code = (
        "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True,"
        " stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL);"
        " print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *cmd], env=env, check=True, capture_output=True, text=True
    )
    return int(out.stdout) / 1024


def cold_rows(app: Path, rounds: int, base: Path) -> list[Row]:
    work = base / "cold"
    work.mkdir()
    cache = work / "cache"
    env = dict(os.environ, AUTO_REVIEW_CACHE_DIR=str(cache))
    payload = work / "rootfs.tar.zst"
    with zipfile.ZipFile(app) as zf:
        payload.write_bytes(zf.read("bundle/rootfs.tar.zst"))
    target = work / "tar-x"

    def reset() -> None:
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()

    ours = timed(lambda: run([PYTHON, str(app), "-q", "cache", "prepare"], env), rounds, reset)
    shell = f"zstd -dc {payload} | tar -x -C {target}"
    ref = timed(lambda: run(["sh", "-c", shell]), rounds, reset)
    reset()
    rss = peak_rss_mb([PYTHON, str(app), "-q", "cache", "prepare"], env)
    reset()
    rss_ref = peak_rss_mb(["sh", "-c", shell], env)
    reset()
    procs_time = []
    extractions = 0
    for _ in range(max(1, rounds // 3)):
        reset()
        started = time.perf_counter()
        procs = [
            subprocess.Popen(
                [PYTHON, str(app), "cache", "prepare"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(16)
        ]
        errs = [p.communicate()[1] for p in procs]
        procs_time.append(time.perf_counter() - started)
        extractions = sum("unpacked" in e for e in errs)
    return [
        (
            "cold unpack (cache emptied each round)",
            fmt(ours),
            f"`zstd -dc | tar -x`: {fmt(ref)}",
            ratio(ours, ref),
            "<= 1.3x",
        ),
        (
            "cold unpack peak RSS",
            f"{rss:.1f} MB",
            f"`zstd -dc | tar -x`: {rss_ref:.1f} MB",
            f"{rss / rss_ref:.2f}x",
            "<= 64 MB",
        ),
        (
            "16 concurrent cold starts",
            fmt(procs_time),
            f"one cold start: {fmt(ours)}",
            ratio(procs_time, ours),
            f"extractions: {extractions} (must be 1)",
        ),
    ]


def cold_synced_row(app: Path, rounds: int, base: Path) -> Row:
    """Cold unpack vs `zstd -dc | tar -x && sync -f` of the same bytes: what tar costs when
    it, too, makes the tree durable (the launcher syncs before publishing)."""
    work = base / "cold-synced"
    work.mkdir()
    cache, target = work / "cache", work / "tar-x"
    env = dict(os.environ, AUTO_REVIEW_CACHE_DIR=str(cache))
    payload = work / "rootfs.tar.zst"
    with zipfile.ZipFile(app) as zf:
        payload.write_bytes(zf.read("bundle/rootfs.tar.zst"))

    def reset() -> None:
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()

    shell = f"zstd -dc {payload} | tar -x -C {target} && sync -f {target}"
    ours, ref = [], []
    for _ in range(rounds):  # interleaved: a busy neighbour slows both alike
        ours += timed(lambda: run([PYTHON, str(app), "-q", "cache", "prepare"], env), 1, reset)
        ref += timed(lambda: run(["sh", "-c", shell]), 1, reset)
    return (
        "cold unpack vs a synced `tar -x`",
        fmt(ours),
        f"`zstd -dc | tar -x && sync -f`: {fmt(ref)}",
        ratio(ours, ref),
        "<= 1.0x",
    )


def size_rows(app: Path, base: Path) -> list[Row]:
    m = manifest_of(app)
    work = base / "size"
    work.mkdir()
    tar = work / "rootfs.tar"
    with zipfile.ZipFile(app) as zf:
        zst = zf.read("bundle/rootfs.tar.zst")
    import zstandard

    tar.write_bytes(zstandard.ZstdDecompressor().stream_reader(zst).read())
    sizes = {}
    for tool in ("xz", "gzip"):
        out = subprocess.run([tool, "-9", "-c", str(tar)], check=True, capture_output=True).stdout
        sizes[tool] = len(out)
    single = app.stat().st_size
    return [
        (
            "single file",
            f"{single / 1e6:.1f} MB",
            f"xz -9 of the tar: {sizes['xz'] / 1e6:.1f} MB",
            f"{single / sizes['xz']:.2f}x",
            "<= 14 MB (the release issue's)",
        ),
        (
            "payload (zstd)",
            f"{len(zst) / 1e6:.1f} MB",
            f"gzip -9 of the tar: {sizes['gzip'] / 1e6:.1f} MB",
            f"{len(zst) / sizes['gzip']:.2f}x",
            "",
        ),
        ("rootfs", f"{m['unpacked_size'] / 1e6:.1f} MB", f"{m['file_count']} entries", "", ""),
    ]


def bare_python(rounds: int) -> list[float]:
    """The reference start: an interpreter that imports nothing."""
    return timed(lambda: run([PYTHON, "-I", "-S", "-c", "pass"]), rounds)


def pack_hello(work: Path) -> tuple[Path, Path]:
    """Install the pinned shiv and PEX into a throwaway venv and pack `hello:main`
    with each; returns (hello.shiv, hello.pex)."""
    venv, src = work / "venv", work / "src"
    src.mkdir(parents=True)
    (src / "hello.py").write_text("import sys\n\n\ndef main() -> None:\n    sys.exit(0)\n")
    bin_dir = venv / "bin"
    run([PYTHON, "-m", "venv", str(venv)])
    run([str(bin_dir / "pip"), "install", "-q", *PINS])
    shiv_file, pex_file = work / "hello.shiv", work / "hello.pex"
    shiv = [str(bin_dir / "shiv"), "-e", "hello:main", "-o", str(shiv_file)]
    run([*shiv, "--site-packages", str(src)])
    run([str(bin_dir / "pex"), "-D", str(src), "-e", "hello:main", "-o", str(pex_file)])
    return shiv_file, pex_file


def zipapp_rows(app: Path, rounds: int, base: Path) -> list[Row]:
    """`hello:main` packed with shiv and PEX: warm and cold start (their own cache,
    SHIV_ROOT / PEX_ROOT, emptied before each cold round), vs a bare interpreter;
    and our warm `--version` vs shiv's warm start. One explanatory row if the tools
    cannot be installed or packed (e.g. no network)."""
    work = base / "zipapps"
    try:
        shiv_file, pex_file = pack_hello(work)
    except (OSError, subprocess.CalledProcessError) as exc:
        why = f"exit {exc.returncode}" if isinstance(exc, subprocess.CalledProcessError) else exc
        cell = f"`pip install {' '.join(PINS)}` / packing failed ({why})"
        return [("shiv / PEX", "not measured", cell, "", "context")]
    ref = bare_python(rounds)
    ref_cell = f"`python3 -I -S -c pass`: {fmt(ref)}"
    rows: list[Row] = []
    warm_by_tool: dict[str, list[float]] = {}
    for name, file, root_var in (("shiv", shiv_file, "SHIV_ROOT"), ("PEX", pex_file, "PEX_ROOT")):
        root = work / f"{name.lower()}-root"
        env = dict(os.environ, **{root_var: str(root)})
        cold = timed(
            lambda f=file, e=env: run([PYTHON, str(f)], e),
            rounds,
            lambda r=root: shutil.rmtree(r, ignore_errors=True),
        )
        run([PYTHON, str(file)], env)  # the cache is filled: warm from here on
        warm = warm_by_tool[name] = timed(lambda f=file, e=env: run([PYTHON, str(f)], e), rounds)
        rows.append((f"{name} warm start", fmt(warm), ref_cell, ratio(warm, ref), "context"))
        rows.append((f"{name} cold start", fmt(cold), ref_cell, ratio(cold, ref), "context"))
    env = dict(os.environ, AUTO_REVIEW_CACHE_DIR=str(work / "ar-cache"))
    run([PYTHON, str(app), "-q", "cache", "prepare"], env)
    ours = timed(lambda: run([PYTHON, str(app), "--version"], env), rounds)
    shiv_warm = warm_by_tool["shiv"]
    rows.append(
        (
            "warm `auto-review --version` vs shiv",
            fmt(ours),
            f"shiv warm start: {fmt(shiv_warm)}",
            ratio(ours, shiv_warm),
            "context",
        )
    )
    return rows


def bench_users() -> list[str | None]:
    users: list[str | None] = [None] if os.geteuid() == 0 else []
    try:
        pwd.getpwnam(ROOTLESS_USER)
        users.append(ROOTLESS_USER)
    except KeyError:
        pass
    return users


def serve_start(app: Path, env: dict[str, str], user: str | None) -> None:
    """`serve` from spawn to "serving on", then a SIGTERM stop (not timed by the caller's
    reading: the stop happens after the line is seen)."""
    proc = subprocess.Popen([PYTHON, str(app), "serve"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, user=user, group=user,
                            extra_groups=[] if user else None)  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        if "serving on" in line:
            break
    else:
        raise RuntimeError("serve exited before serving")
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
    for net in ("isolated", "host"):
        env = dict(box.env, AUTO_REVIEW_NETWORK=net, AUTO_REVIEW_CA_FILE=ca)
        for name, args in cases.items():
            cmd = [PYTHON, str(target), *args]
            times[(name, net)] = timed(lambda c=cmd, e=env: run(c, e, user), rounds)
        serve_env = dict(env, AR_GATEWAY_BIND="127.0.0.1:18750", WEBHOOK_SECRET="x" * 32)
        serve_env.update(FORGEJO_BASE_URL="https://forge.invalid", AR_FORGEJO_TOKEN="t")
        times[("serve start", net)] = timed(
            lambda e=serve_env: serve_start(target, e, user), max(3, rounds // 3)
        )
    rows: list[Row] = []
    for name in ("check", "probe exit 0"):
        bare = timed(box.bare_runc(*cases[name]), rounds)
        for net in ("isolated", "host"):
            ours = times[(name, net)]
            goal = "<= 1.25x" if (name, net) == ("check", "isolated") else ""
            ref = f"bare `runc run`: {fmt(bare)}"
            rows.append((f"warm `{name}` ({mode}, {net})", fmt(ours), ref, ratio(ours, bare), goal))
    for name in ("probe connect", "serve start", "clone"):
        iso, hst = times[(name, "isolated")], times[(name, "host")]
        extra = (statistics.median(iso) - statistics.median(hst)) * 1000
        rows.append((f"{name} ({mode}, isolated)", fmt(iso), f"host network: {fmt(hst)}",
                     ratio(iso, hst), f"the stack adds {extra:+.1f} ms"))  # fmt: skip
    return rows


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
    run([PYTHON, str(app), "bundle", "export", "--docker-archive", str(work / "img.tar")], env)
    run([PYTHON, str(app), "bundle", "export", "--seccomp", str(work / "seccomp.json")], env)
    run(["podman", "load", "-i", str(work / "img.tar")])
    run(["podman", "tag", f"localhost/auto-review:{version}", image])
    volume = f"ar-bench-{os.getpid()}"
    line = [*podman_line(work / "seccomp.json", volume, image), "check"]
    rows: list[Row] = []
    try:
        run(line, check=False)  # the volume's first creation is not timed
        ours = timed(lambda: run([PYTHON, str(app), "-q", "check"], env, check=False), rounds)
        ref = timed(lambda: run(line, check=False), rounds)
        podman_ref = f"`podman run --rm` (IMAGE.md line): {fmt(ref)}"
        rows.append(("warm `check` (root) vs the image in podman", fmt(ours), podman_ref,
                     ratio(ours, ref), ""))  # fmt: skip
        gv = dict(env, AUTO_REVIEW_RUNTIME="runsc")
        rc = dict(env, AUTO_REVIEW_RUNTIME="runc")
        for args in (("check",), ("probe", "exit", "0")):
            run([PYTHON, str(app), "-q", *args], gv, check=False)
            ours = timed(lambda a=args: run([PYTHON, str(app), "-q", *a], gv, check=False), rounds)
            ref = timed(lambda a=args: run([PYTHON, str(app), "-q", *a], rc, check=False), rounds)
            rows.append((f"warm `{' '.join(args)}` under runsc (root)", fmt(ours),
                         f"the same under runc: {fmt(ref)}", ratio(ours, ref), ""))  # fmt: skip
        # gVisor's own start, without the launcher: the same config under both runtimes
        (work / "bare" / "state").mkdir(mode=0o700, parents=True)  # the bind's source
        bare = Sandbox(app, work / "bare", None)
        probe = ("probe", "exit", "0")
        gvisor = bare.bare_runc(*probe, runtime=("runsc", "--network=none"), check=True)
        gvisor_times = timed(gvisor, rounds)
        runc_bare = timed(bare.bare_runc(*probe, check=True), rounds)
        rows.append(("bare `runsc run` of `probe exit 0` (root)", fmt(gvisor_times),
                     f"bare `runc run`: {fmt(runc_bare)}", ratio(gvisor_times, runc_bare),
                     "gVisor's start alone"))  # fmt: skip
    finally:
        run(["podman", "volume", "rm", "-f", volume], check=False)
        run(["podman", "rmi", "-f", image], check=False)
    return rows


def bench_arguments(doc: str | None) -> tuple[argparse.Namespace, int]:
    """The benchmarks' command line (--quick, --app) and the rounds it asks for."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    parser.add_argument("--app", type=Path, default=ROOT / "dist" / "auto-review")
    args = parser.parse_args()
    return args, 3 if args.quick else 15


def main() -> int:
    args, rounds = bench_arguments(__doc__)
    app = ensure_app(args.app.resolve())
    with tempfile.TemporaryDirectory(prefix="ar-bench-", dir="/tmp") as tmp:
        base = Path(tmp)
        os.chmod(base, 0o755)
        rows = [
            *warm_rows(app, rounds, base),
            warm_path_row(app, rounds, base),
            *cold_rows(app, rounds, base),
            cold_synced_row(app, rounds, base),
            *size_rows(app, base),
            *zipapp_rows(app, rounds, base),
            *network_rows(app, rounds, base),
            *runtime_rows(app, rounds, base),
        ]
    cores, mem = os.cpu_count(), os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    print(
        f"auto-review {manifest_of(app)['version']}, {time.strftime('%Y-%m-%d')}, "
        f"{cores} cores, {mem:.0f} GiB, {rounds} rounds, median (min-max)\n"
    )
    print("| case | auto-review | reference (same run) | ratio | goal |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
