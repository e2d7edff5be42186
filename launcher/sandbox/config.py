"""The OCI runtime config (config.json) for one sandboxed run.

Root mode: the process runs as the manifest's unprivileged uid, with pids and
memory cgroup limits. Rootless: a user namespace mapping only our uid (to uid 0
inside), rlimits within our hard limits, /sys bound read-only; RLIMIT_NPROC caps
processes (since Linux 5.14 it counts per user namespace), and memory is capped by the
same cgroup limits as root's where the host delegated a cgroup v2 subtree to us
(launcher.sandbox.cgroup2), else by RLIMIT_DATA on each process. Both:
read-only root, a /dev tmpfs of its own, empty capabilities, no new privileges,
masked /proc paths, the seccomp allowlist of launcher.sandbox.seccomp, and a
network namespace of its own unless the host network is asked for.
"""

from __future__ import annotations

import os
import resource

from launcher.sandbox import seccomp

TYPE_CHECKING = False  # typing costs milliseconds on every warm start
if TYPE_CHECKING:
    from typing import Any

# The runtime-spec version whose fields the configs use: linux.seccomp.defaultErrnoRet
# and syscalls[].errnoRet came with 1.1.0 (tests/test_oci_schema.py checks the schema).
OCI_VERSION = "1.1.0"
PIDS_LIMIT = 1024
NOFILE = 4096
MEMORY_LIMIT = 2 << 30  # bytes, memory+swap, root mode
# Where no memory cgroup applies (rootless, or a host without the controller), each
# process gets RLIMIT_DATA instead: its private writable memory (heap, anonymous maps,
# thread stacks; not the file maps git reads packs with), per process, not in total.
DATA_LIMIT = MEMORY_LIMIT

CAPABILITY_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")

MASKED_PATHS = [
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/kernel", "/sys/fs/selinux", "/sys/dev",
]  # fmt: skip
READONLY_PATHS = [
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
]  # fmt: skip


class RunSpec:
    """Everything that varies between runs."""

    def __init__(
        self,
        *,
        rootfs: str,
        manifest: dict[str, Any],
        args: list[str],
        env: list[str],
        state_dir: str,
        rootless: bool,
        hostname: str = "auto-review",
        resolv_conf: str | None = None,
        ca_bundle: str | None = None,
        repo_dir: str | None = None,
        host_network: bool = False,
        memory_limit: int = MEMORY_LIMIT,
        gvisor: bool = False,
        netns_path: str | None = None,
        userns_path: str | None = None,
        cgroup_path: str | None = None,
    ) -> None:
        self.rootfs = rootfs
        self.manifest = manifest
        self.args = args
        self.env = env
        self.state_dir = state_dir
        self.rootless = rootless
        self.hostname = hostname
        self.resolv_conf = resolv_conf
        self.ca_bundle = ca_bundle
        self.repo_dir = repo_dir
        self.host_network = host_network
        self.memory_limit = memory_limit
        self.gvisor = gvisor
        self.netns_path = netns_path  # join this network namespace (prepared first)
        self.userns_path = userns_path  # rootless: join this user namespace (which owns it)
        self.cgroup_path = cgroup_path  # rootless: the sandbox's cgroup in a delegated subtree


def rlimits(
    rootless: bool, want_nproc: bool | None = None, data_limit: int | None = None
) -> list[dict[str, Any]]:
    """NOFILE raised to NOFILE, no core dumps; rootless (or `want_nproc`), NPROC as the pids
    limit; with `data_limit`, RLIMIT_DATA (bytes). Rootless limits never exceed our hard
    limits (runc cannot raise them without privilege)."""
    nofile, nproc, data = NOFILE, PIDS_LIMIT, data_limit
    if rootless:
        nofile = _within_hard(resource.RLIMIT_NOFILE, nofile)
        nproc = _within_hard(resource.RLIMIT_NPROC, nproc)
        data = _within_hard(resource.RLIMIT_DATA, data) if data else None
    out = [
        {"type": "RLIMIT_NOFILE", "soft": nofile, "hard": nofile},
        {"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
    ]
    if rootless if want_nproc is None else want_nproc:
        out.append({"type": "RLIMIT_NPROC", "soft": nproc, "hard": nproc})
    if data:
        out.append({"type": "RLIMIT_DATA", "soft": data, "hard": data})
    return out


def memory_bound(rootless: bool, delegated: bool = False) -> str:
    """Which memory bound a run gets: "cgroup" (root with the memory controller, or
    rootless in a delegated cgroup: the whole sandbox's memory+swap) or "rlimit"
    (RLIMIT_DATA, each process)."""
    if rootless:
        return "cgroup" if delegated else "rlimit"
    return "cgroup" if memory_controller() else "rlimit"


def _within_hard(kind: int, want: int) -> int:
    _soft, hard = resource.getrlimit(kind)
    return want if hard == resource.RLIM_INFINITY else min(want, hard)


def mounts(spec: RunSpec) -> list[dict[str, Any]]:
    """Kernel filesystems, the writable tmpfs and state dir, and read-only host files."""
    out: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "noexec", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
    ]  # fmt: skip
    if spec.rootless:
        out.append({"destination": "/sys", "type": "none", "source": "/sys",
                    "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]})  # fmt: skip
    else:
        out.append({"destination": "/sys", "type": "sysfs", "source": "sysfs",
                    "options": ["nosuid", "noexec", "nodev", "ro"]})  # fmt: skip
    if not spec.rootless or spec.cgroup_path:
        # read-only, in the container's cgroup namespace: `check` reads its own limits
        out.append({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                    "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]})  # fmt: skip
    for m in spec.manifest.get("mounts", []):
        if m["type"] == "tmpfs":
            out.append({"destination": m["destination"], "type": "tmpfs", "source": "tmpfs",
                        "options": list(m.get("options", []))})  # fmt: skip
        elif m.get("role") == "state":
            out.append(bind(spec.state_dir, m["destination"], writable=True))
    if spec.resolv_conf:
        out.append(bind(spec.resolv_conf, "/etc/resolv.conf"))
    if spec.ca_bundle:
        out.append(bind(spec.ca_bundle, "/etc/ssl/certs/ca-certificates.crt"))
    if spec.repo_dir:
        out.append(bind(spec.repo_dir, "/mnt/repo"))
    return out


def bind(source: str, destination: str, writable: bool = False) -> dict[str, Any]:
    """A bind mount; read-only unless `writable`, never with devices, setuid or exec."""
    options = ["rbind", "nosuid", "nodev", "noexec", "rw" if writable else "ro"]
    return {"destination": destination, "type": "bind", "source": source, "options": options}


def data_limit(spec: RunSpec) -> int | None:
    """RLIMIT_DATA for a run that no memory cgroup bounds (see DATA_LIMIT), else None."""
    if not spec.memory_limit or memory_bound(spec.rootless, bool(spec.cgroup_path)) == "cgroup":
        return None
    return min(DATA_LIMIT, spec.memory_limit)


def memory_controller() -> bool:
    """Whether this host has the memory cgroup controller (else runc refuses the limit)."""
    try:
        with open("/sys/fs/cgroup/cgroup.controllers") as fh:  # v2
            return "memory" in fh.read().split()
    except OSError:
        return os.path.isdir("/sys/fs/cgroup/memory")  # v1 or hybrid


def cgroup_limits(spec: RunSpec, memory: bool) -> dict[str, Any]:
    """linux.resources: the pids limit, and with `memory` memory+swap at the spec's limit."""
    out: dict[str, Any] = {"pids": {"limit": PIDS_LIMIT}}
    if memory and spec.memory_limit:
        out["memory"] = {"limit": spec.memory_limit, "swap": spec.memory_limit}
    return out


def gvisor_seccomp(profile: dict[str, Any]) -> dict[str, Any]:
    """The allowlist as gVisor's Sentry can enforce it: it does not apply a rule's
    errnoRet (every ERRNO rule answers EPERM), so `clone3 -> ENOSYS`, which makes glibc
    fall back to the inspectable `clone`, would make every thread start fail. clone3 is
    left out of the filter: the Sentry of the Debian runsc does not implement it and
    answers ENOSYS itself (`check`'s threads prove it: Python starts one at once)."""
    rules = [r for r in profile["syscalls"] if r["names"] != ["clone3"]]
    rules.append({"names": ["clone3"], "action": "SCMP_ACT_ALLOW"})
    return {**profile, "syscalls": rules}


def build_config(spec: RunSpec) -> dict[str, Any]:
    """The complete config.json document for `spec`."""
    proc = spec.manifest["process"]
    uid, gid = int(proc["user"]["uid"]), int(proc["user"]["gid"])
    kinds = ("pid", "ipc", "uts", "mount") + (() if spec.host_network else ("network",))
    namespaces = [{"type": t} for t in kinds]
    if spec.netns_path and not spec.host_network:
        namespaces[-1]["path"] = spec.netns_path
    linux: dict[str, Any] = {
        "namespaces": namespaces,
        "maskedPaths": MASKED_PATHS,
        "readonlyPaths": READONLY_PATHS,
        "seccomp": gvisor_seccomp(seccomp.profile()) if spec.gvisor else seccomp.profile(),
    }
    if spec.rootless:
        # runc needs container root mapped; only our own uid exists in the namespace,
        # so "root" inside owns nothing of the host's and has no capabilities.
        uid = gid = 0
        if spec.userns_path:  # made first, with that same mapping (launcher.sandbox.netfirst)
            namespaces.append({"type": "user", "path": spec.userns_path})
        else:
            namespaces.append({"type": "user"})
            linux["uidMappings"] = [{"containerID": 0, "hostID": os.getuid(), "size": 1}]
            linux["gidMappings"] = [{"containerID": 0, "hostID": os.getgid(), "size": 1}]
    if spec.rootless and spec.cgroup_path:
        linux["cgroupsPath"] = spec.cgroup_path  # its parent was made ready for it
        namespaces.append({"type": "cgroup"})
        linux["resources"] = cgroup_limits(spec, memory=True)
    elif not spec.rootless:
        namespaces.append({"type": "cgroup"})
        linux["resources"] = cgroup_limits(spec, memory=memory_controller())
    return {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": False,
            "user": {"uid": uid, "gid": gid, "additionalGids": []},
            "args": [*proc["args"], *spec.args],
            "env": spec.env,
            "cwd": proc.get("cwd", "/"),
            "capabilities": {k: [] for k in CAPABILITY_SETS},
            # gVisor: the host cgroup counts the Sentry's threads, not the sandbox's
            # processes, so RLIMIT_NPROC (which the Sentry enforces) caps those
            "rlimits": rlimits(
                spec.rootless,
                want_nproc=spec.rootless or spec.gvisor,
                data_limit=data_limit(spec),
            ),
            "noNewPrivileges": True,
        },
        "root": {"path": spec.rootfs, "readonly": True},
        "hostname": spec.hostname,
        "mounts": mounts(spec),
        "linux": linux,
    }
