"""The OCI runtime config (config.json) for one sandboxed run.

Root mode: the process runs as the manifest's unprivileged uid, with a pids
cgroup limit. Rootless: a user namespace mapping only our uid (to the same
unprivileged uid inside), no cgroups, rlimits within our hard limits, /sys
bound read-only. Both: read-only root, empty capabilities, no new privileges,
masked /proc paths and a seccomp denylist. Host network (no net namespace).
"""

from __future__ import annotations

import os
import resource

TYPE_CHECKING = False  # typing costs milliseconds on every warm start
if TYPE_CHECKING:
    from typing import Any

PIDS_LIMIT = 1024
NOFILE = 4096

# Syscalls the gateway never needs and a sandbox escape usually does.
DENIED_SYSCALLS = (
    "unshare", "setns", "mount", "umount", "umount2", "pivot_root", "chroot",
    "move_mount", "open_tree", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "open_by_handle_at", "name_to_handle_at", "lookup_dcookie", "quotactl",
    "swapon", "swapoff", "reboot", "syslog", "acct", "settimeofday", "clock_settime",
    "clock_adjtime", "adjtimex", "iopl", "ioperm", "vhangup", "uselib",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
)  # fmt: skip
CLONE_NAMESPACE_FLAGS = (
    0x00000080,  # CLONE_NEWTIME
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
)
EPERM, ENOSYS = 1, 38
CAPABILITY_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")
SECCOMP_ARCH = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64"}

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


def seccomp_profile() -> dict[str, Any]:
    """Allow by default; deny the escape syscalls with EPERM, clone3 with ENOSYS
    (so glibc falls back to clone, whose namespace flags we can inspect)."""
    rules: list[dict[str, Any]] = [
        {"names": list(DENIED_SYSCALLS), "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM},
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS},
    ]
    for flag in CLONE_NAMESPACE_FLAGS:
        rules.append(
            {
                "names": ["clone"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": EPERM,
                "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}],
            }
        )
    arch = SECCOMP_ARCH.get(os.uname().machine)
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": [arch] if arch else [],
        "syscalls": rules,
    }


def rlimits(rootless: bool) -> list[dict[str, Any]]:
    """NOFILE raised to NOFILE (never above our hard limit rootless), no core dumps."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = NOFILE if hard == resource.RLIM_INFINITY else min(NOFILE, hard)
    if not rootless:
        want = NOFILE
    return [
        {"type": "RLIMIT_NOFILE", "soft": want, "hard": want},
        {"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
    ]


def mounts(spec: RunSpec) -> list[dict[str, Any]]:
    """Kernel filesystems, the writable tmpfs and state dir, and read-only host files."""
    out: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
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


def build_config(spec: RunSpec) -> dict[str, Any]:
    """The complete config.json document for `spec`."""
    proc = spec.manifest["process"]
    uid, gid = int(proc["user"]["uid"]), int(proc["user"]["gid"])
    namespaces = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    linux: dict[str, Any] = {
        "namespaces": namespaces,
        "maskedPaths": MASKED_PATHS,
        "readonlyPaths": READONLY_PATHS,
        "seccomp": seccomp_profile(),
    }
    if spec.rootless:
        # runc needs container root mapped; only our own uid exists in the namespace,
        # so "root" inside owns nothing of the host's and has no capabilities.
        uid = gid = 0
        namespaces.append({"type": "user"})
        linux["uidMappings"] = [{"containerID": 0, "hostID": os.getuid(), "size": 1}]
        linux["gidMappings"] = [{"containerID": 0, "hostID": os.getgid(), "size": 1}]
    else:
        namespaces.append({"type": "cgroup"})
        linux["resources"] = {"pids": {"limit": PIDS_LIMIT}}
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": uid, "gid": gid, "additionalGids": []},
            "args": [*proc["args"], *spec.args],
            "env": spec.env,
            "cwd": proc.get("cwd", "/"),
            "capabilities": {
                k: [] for k in ("bounding", "effective", "inheritable", "permitted", "ambient")
            },
            "rlimits": rlimits(spec.rootless),
            "noNewPrivileges": True,
        },
        "root": {"path": spec.rootfs, "readonly": True},
        "hostname": spec.hostname,
        "mounts": mounts(spec),
        "linux": linux,
    }
