"""Run a gateway command inside the sandbox and mirror its exit status.

This module prepares the run (the config, the run dir, the host paths bound in,
the network mode) and hands it to launcher.sandbox.supervise. The cache use lock
stays here, held by the launcher for as long as the sandbox runs; the container
gets only the lifeline and the secrets pipe (launcher.sandbox.hostlink), so it
exits when the launcher dies.
"""

from __future__ import annotations

import os
import sys

from launcher import settings
from launcher.cache.warm import Acquired, acquire
from launcher.errors import ConfigError, SandboxFailed, UsageError
from launcher.sandbox import config, gateway_env, hostlink, netfirst, network, rundirs
from launcher.sandbox.runtime import discover
from launcher.sandbox.statedir import state_dir
from launcher.sandbox.supervise import supervise, supervise_with_network

REPO_MOUNT = "/mnt/repo"  # a mount point the recipe pre-creates
CA_IN_ROOTFS = "etc/ssl/certs/ca-certificates.crt"

TYPE_CHECKING = False  # typing costs milliseconds on every warm start
if TYPE_CHECKING:
    from typing import Any


def is_bare(opts: dict[str, bool]) -> bool:
    return opts.get("bare", False) or settings.bare() != ""


def run_sandboxed(argv: list[str], opts: dict[str, bool]) -> int:
    """Run `argv` (a gateway command and its arguments) and return its exit status.

    Everything that reads only the environment and the host (the runtime, the network,
    host paths and files named by settings) is checked before the cache is touched.
    """
    if is_bare(opts):
        from launcher.sandbox import container  # bare runs only: the warm path skips it

        container.refuse_bare_on_a_host()
        found_ca = extra_ca()
        return run_bare(acquire(quiet=opts["quiet"]), argv, found_ca)
    rootless = os.geteuid() != 0
    runtime = discover(rootless)
    if rootless:
        check_user_namespaces()
    argv, repo_dir = bind_repo_path(argv)
    net_mode = network.mode()
    stack = net_mode == "isolated" and network.needs_stack(argv)
    if stack:
        network.refuse_host_loopback(argv)
    slirp = network.slirp4netns() if stack else None
    forward = network.serve_forward(argv) if stack else None
    found_ca = extra_ca()
    acquired = acquire(quiet=opts["quiet"])
    runtime.set_mode("host" if net_mode == "host" else "stack" if stack else "none")
    if opts["verbose"]:
        mode = "rootless" if rootless else "root"
        sys.stderr.write(
            f"auto-review: runtime {runtime.describe()}; {mode}; rootfs {acquired.rootfs}\n"
        )
        xdg = os.environ.get("XDG_RUNTIME_DIR", "")
        problem = rundirs.xdg_problem(xdg) if xdg else None
        if problem:
            sys.stderr.write(
                f"auto-review: XDG_RUNTIME_DIR={xdg} is {problem}: run state goes in the cache\n"
            )
    extra = {
        "AUTO_REVIEW_BUNDLE_DIGEST": acquired.digest,
        "AUTO_REVIEW_LIFELINE_FD": str(
            hostlink.LIFELINE_FD if runtime.passes_fds else hostlink.STDIN_FD
        ),
        "AUTO_REVIEW_SECRETS_FD": str(
            hostlink.SECRETS_FD if runtime.passes_fds else hostlink.STDIN_FD
        ),
        "AUTO_REVIEW_NETWORK": net_mode,
    }
    if forward:  # inside, the forwarded port arrives on the tap device's address
        argv = network.without_listen(argv)
        extra["AR_GATEWAY_BIND"] = f"0.0.0.0:{forward[1]}"
        extra["AUTO_REVIEW_HOST_LISTEN"] = f"{forward[0]}:{forward[1]}"  # what serve prints
    # Before the run dir exists: a bad GITHUB_APP_PRIVATE_KEY_FILE leaves nothing behind.
    env, secrets = gateway_env.sandbox_env_and_secrets(
        acquired.manifest["process"]["env"], runtime.name, extra
    )
    dirs = rundirs.RunDirs.open(acquired.layout, runtime)
    dirs.clean_stale(runtime)
    run = dirs.new_run(runtime, settings.container_id())
    # before any helper process starts: they stay in the leaf the launcher moves into
    cgroup_path = delegated_cgroup(run.container_id) if rootless else None
    holder = gstack = None
    try:
        if slirp and netfirst.needs_network_first(runtime, rootless):
            holder = netfirst.NetnsHolder(user=rootless)
            gstack = netfirst.prepare(holder, slirp, run, forward)
        spec = config.RunSpec(
            rootfs=acquired.rootfs,
            manifest=acquired.manifest,
            args=argv,
            env=env,
            state_dir=state_dir(
                *sandbox_owner(rootless, acquired.manifest),
                acquired.manifest["process"]["user"]["uid"],
            ),
            rootless=rootless,
            resolv_conf=network.resolv_conf(resolv_conf(), run.path) if stack else resolv_conf(),
            ca_bundle=ca_bundle(found_ca, acquired, run.path),
            repo_dir=repo_dir,
            host_network=net_mode == "host",
            gvisor=runtime.gvisor,
            netns_path=holder.path if holder else None,
            userns_path=holder.userns_path if holder else None,
            cgroup_path=cgroup_path,
        )
        run.write_config(config.build_config(spec))
        link = hostlink.HostLink(secrets, on_stdin=not runtime.passes_fds)
        try:
            if holder and gstack:
                return netfirst.supervise_prepared(runtime, dirs, run, link, holder, gstack)
            if slirp:
                return supervise_with_network(runtime, dirs, run, link, slirp, rootless, forward)
            return supervise(runtime, dirs, run, link)
        finally:
            link.cut()
    finally:
        if gstack:
            gstack.stop()
        if holder:
            holder.stop()
        run.remove()


def delegated_cgroup(name: str) -> str | None:
    """Rootless: the sandbox's cgroup path in a cgroup v2 subtree delegated to us, made
    ready (launcher.sandbox.cgroup2), or None. A delegated subtree that cannot take it
    is said in one line: the run goes on with the per-process memory bound."""
    from launcher.sandbox import cgroup2  # rootless only; a few syscalls

    found = cgroup2.find()
    if found is None:
        return None
    try:
        return cgroup2.prepare(found, name)
    except cgroup2.NotUsable as exc:
        sys.stderr.write(
            f"auto-review: delegated cgroup not used: {exc}; memory is capped per process"
            " (RLIMIT_DATA) instead\n"
        )
        return None


def bind_repo_path(argv: list[str]) -> tuple[list[str], str | None]:
    """`review --path DIR`: DIR is bound read-only at /mnt/repo and the argument rewritten.

    Only the review command takes a host path; everything else passes unchanged.
    """
    if not argv or argv[0] != "review":
        return argv, None
    out, repo = [argv[0]], None
    rest = iter(argv[1:])
    for arg in rest:
        if arg == "--path" or arg.startswith("--path="):
            value = arg.split("=", 1)[1] if "=" in arg else next(rest, "")
            repo = os.path.realpath(value) if value else ""
            if not repo or not os.path.isdir(repo):
                raise UsageError(f"--path {value!r} is not a directory", "give a git checkout")
            out += ["--path", REPO_MOUNT]
        else:
            out.append(arg)
    return out, repo


def check_user_namespaces() -> None:
    """Fail early, with the fix, where unprivileged user namespaces are switched off."""
    for path, bad in (
        ("/proc/sys/user/max_user_namespaces", "0"),
        ("/proc/sys/kernel/unprivileged_userns_clone", "0"),
    ):
        try:
            with open(path) as fh:
                value = fh.read().strip()
        except OSError:
            continue
        if value == bad:
            raise SandboxFailed(
                f"user namespaces are disabled on this host ({path} = {value})",
                f"as root: sysctl -w {path[len('/proc/sys/') :].replace('/', '.')}=1"
                " -- or run auto-review as root",
            )


def sandbox_owner(rootless: bool, manifest: dict[str, Any]) -> tuple[int, int]:
    """Who the gateway runs as, seen from the host."""
    if rootless:
        return os.geteuid(), os.getegid()
    user = manifest["process"]["user"]
    return int(user["uid"]), int(user["gid"])


def resolv_conf() -> str | None:
    path = os.path.realpath("/etc/resolv.conf")
    return path if os.path.isfile(path) else None


CA_MAX = 16 << 20  # far above any real CA bundle (Debian's is about 200 KiB)


def extra_ca() -> tuple[str, bytes] | None:
    """AUTO_REVIEW_CA_FILE, checked: (path, PEM bytes), or None when unset."""
    extra = os.environ.get("AUTO_REVIEW_CA_FILE", "").strip()
    if not extra:
        return None
    from launcher.hostfile import read_regular_file  # only when set: the warm path skips it

    pem = read_regular_file(
        "AUTO_REVIEW_CA_FILE", extra, CA_MAX, "point AUTO_REVIEW_CA_FILE at a PEM file"
    )
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        raise ConfigError(
            f"AUTO_REVIEW_CA_FILE={extra} holds no PEM certificate",
            "give a file with -----BEGIN CERTIFICATE----- blocks",
        )
    return extra, pem


def ca_bundle(found: tuple[str, bytes] | None, acquired: Acquired, run_dir: str) -> str | None:
    """AUTO_REVIEW_CA_FILE (`found` by extra_ca) appended to the rootfs's CA bundle, as a
    file to bind over it."""
    if found is None:
        return None
    with open(os.path.join(acquired.rootfs, CA_IN_ROOTFS), "rb") as fh:
        base = fh.read()
    path = os.path.join(run_dir, "ca-certificates.crt")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(base.rstrip(b"\n") + b"\n" + found[1])
    return path


def bare_env(
    acquired: Acquired, state: str, found: tuple[str, bytes] | None
) -> tuple[dict[str, str], dict[str, str]]:
    """The environment of a bare gateway, and its secrets: what the sandbox would give it.

    The manifest's variables with the rootfs's paths made host paths (its CA bundle,
    so bare and sandboxed runs trust the same CAs), the allowed host variables,
    AUTO_REVIEW_CA_FILE (which the gateway merges itself, as in the image), the
    state dir, the network mode (bare always shares the host's), the bundle digest.
    """
    manifest_env = dict(item.split("=", 1) for item in acquired.manifest["process"]["env"])
    for name in ("SSL_CERT_FILE", "GIT_SSL_CAINFO"):
        if manifest_env.get(name, "").startswith("/"):
            manifest_env[name] = os.path.join(acquired.rootfs, manifest_env[name].lstrip("/"))
    manifest_env["HOME"] = state
    manifest_env["PATH"] = os.environ.get("PATH", os.defpath)  # the host's git
    extra = {
        "AUTO_REVIEW_STATE_DIR_INSIDE": state,
        "AUTO_REVIEW_BUNDLE_DIGEST": acquired.digest,
        "AUTO_REVIEW_NETWORK": "host",
    }
    if found:
        extra["AUTO_REVIEW_CA_FILE"] = os.path.abspath(found[0])
    env_list, secrets = gateway_env.sandbox_env_and_secrets(
        [f"{k}={v}" for k, v in manifest_env.items()], "bare", extra
    )
    return dict(item.split("=", 1) for item in env_list), secrets


def run_bare(acquired: Acquired, argv: list[str], found_ca: tuple[str, bytes] | None) -> int:
    """Run the gateway on the host without a sandbox (the host is already a container)."""
    sys.stderr.write(
        "auto-review: warning: running WITHOUT the sandbox (AUTO_REVIEW_BARE/--bare);"
        " use this only inside a container\n"
    )
    manifest = acquired.manifest
    gateway = os.path.join(acquired.rootfs, manifest["process"]["args"][-1].lstrip("/"))
    state = state_dir(os.geteuid(), os.getegid(), manifest["process"]["user"]["uid"])
    env, secrets = bare_env(acquired, state, found_ca)
    secrets_fd = hostlink.write_secrets(secrets)
    os.set_inheritable(secrets_fd, True)
    env["AUTO_REVIEW_SECRETS_FD"] = str(secrets_fd)
    os.set_inheritable(acquired.lock_fd, True)  # keep the version in use while it runs
    os.execve(sys.executable, [sys.executable, "-I", "-S", gateway, *argv], env)
    return 1  # pragma: no cover - execve does not return
