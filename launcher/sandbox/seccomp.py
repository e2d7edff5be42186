"""The sandbox's seccomp allowlist: one table, and the OCI `linux.seccomp` built from it.

Default action ERRNO(EPERM). Allowed: the syscalls the moby/containerd default
profile allows unconditionally (moby/moby `profiles/seccomp/default.json` at
commit 00f3d189e420d485e42d15fe494f96d272284e0e, its first rule), minus our own
denials; `socket` only for the families the gateway uses; `personality` only
for the values Docker allows; `clone` only without namespace flags; `clone3`
fails with ENOSYS so glibc falls back to `clone`, whose flags can be inspected.
Only the native architecture is listed: syscalls of other ABIs (32-bit, x32)
get libseccomp's bad-architecture action, which kills the process.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing costs milliseconds on every warm start
if TYPE_CHECKING:
    from typing import Any

MOBY_COMMIT = "00f3d189e420d485e42d15fe494f96d272284e0e"

# moby's unconditional SCMP_ACT_ALLOW names, in its order.
MOBY_ALLOWED = """
accept accept4 access adjtimex alarm bind brk capget capset chdir chmod chown chown32
clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime
clock_gettime64 clock_nanosleep clock_nanosleep_time64 close close_range connect
copy_file_range creat dup dup2 dup3 epoll_create epoll_create1 epoll_ctl epoll_ctl_old
epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old eventfd eventfd2 execve execveat exit
exit_group faccessat faccessat2 fadvise64 fadvise64_64 fallocate fanotify_mark fchdir
fchmod fchmodat fchown fchown32 fchownat fcntl fcntl64 fdatasync fgetxattr flistxattr
flock fork fremovexattr fsetxattr fstat fstat64 fstatat64 fstatfs fstatfs64 fsync
ftruncate ftruncate64 futex futex_time64 futex_waitv futimesat getcpu getcwd getdents
getdents64 getegid getegid32 geteuid geteuid32 getgid getgid32 getgroups getgroups32
getitimer getpeername getpgid getpgrp getpid getppid getpriority getrandom getresgid
getresgid32 getresuid getresuid32 getrlimit get_robust_list getrusage getsid getsockname
getsockopt get_thread_area gettid gettimeofday getuid getuid32 getxattr inotify_add_watch
inotify_init inotify_init1 inotify_rm_watch io_cancel ioctl io_destroy io_getevents
io_pgetevents io_pgetevents_time64 ioprio_get ioprio_set io_setup io_submit
io_uring_enter io_uring_register io_uring_setup ipc kill landlock_add_rule
landlock_create_ruleset landlock_restrict_self lchown lchown32 lgetxattr link linkat
listen listxattr llistxattr _llseek lremovexattr lseek lsetxattr lstat lstat64 madvise
membarrier memfd_create memfd_secret mincore mkdir mkdirat mknod mknodat mlock mlock2
mlockall mmap mmap2 mprotect mq_getsetattr mq_notify mq_open mq_timedreceive
mq_timedreceive_time64 mq_timedsend mq_timedsend_time64 mq_unlink mremap msgctl msgget
msgrcv msgsnd msync munlock munlockall munmap name_to_handle_at nanosleep newfstatat
_newselect open openat openat2 pause pidfd_open pidfd_send_signal pipe pipe2 pkey_alloc
pkey_free pkey_mprotect poll ppoll ppoll_time64 prctl pread64 preadv preadv2 prlimit64
process_mrelease pselect6 pselect6_time64 pwrite64 pwritev pwritev2 read readahead
readlink readlinkat readv recv recvfrom recvmmsg recvmmsg_time64 recvmsg
remap_file_pages removexattr rename renameat renameat2 restart_syscall rmdir rseq
rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend
rt_sigtimedwait rt_sigtimedwait_time64 rt_tgsigqueueinfo sched_getaffinity sched_getattr
sched_getparam sched_get_priority_max sched_get_priority_min sched_getscheduler
sched_rr_get_interval sched_rr_get_interval_time64 sched_setaffinity sched_setattr
sched_setparam sched_setscheduler sched_yield seccomp select semctl semget semop
semtimedop semtimedop_time64 send sendfile sendfile64 sendmmsg sendmsg sendto setfsgid
setfsgid32 setfsuid setfsuid32 setgid setgid32 setgroups setgroups32 setitimer setpgid
setpriority setregid setregid32 setresgid setresgid32 setresuid setresuid32 setreuid
setreuid32 setrlimit set_robust_list setsid setsockopt set_thread_area set_tid_address
setuid setuid32 setxattr shmat shmctl shmdt shmget shutdown sigaltstack signalfd
signalfd4 sigprocmask sigreturn socketcall socketpair splice stat stat64 statfs statfs64
statx symlink symlinkat sync sync_file_range syncfs sysinfo tee tgkill time timer_create
timer_delete timer_getoverrun timer_gettime timer_gettime64 timer_settime
timer_settime64 timerfd_create timerfd_gettime timerfd_gettime64 timerfd_settime
timerfd_settime64 times tkill truncate truncate64 ugetrlimit umask uname unlink unlinkat
utime utimensat utimensat_time64 utimes vfork vmsplice wait4 waitid waitpid write writev
""".split()  # noqa: SIM905 - a table, read against moby's

# Ours, on top of moby's: what a sandbox escape or a cross-process attack uses and
# the gateway never needs. Names moby does not allow anyway are listed so the
# intent is explicit and a test can check none of them slips into the allowlist.
DENIED = frozenset(
    """
    io_uring_setup io_uring_enter io_uring_register userfaultfd ptrace
    process_vm_readv process_vm_writev process_madvise name_to_handle_at
    open_by_handle_at keyctl add_key request_key adjtimex clock_adjtime
    clock_adjtime64 kcmp pidfd_getfd unshare setns mount umount umount2 bpf
    perf_event_open
    """.split()  # noqa: SIM905
)

# Allowed per architecture (moby's `includes.arches` rules for the ones we run on).
ARCH_ALLOWED = {
    "x86_64": ("arch_prctl", "modify_ldt"),
    "aarch64": ("arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "set_tls"),
}
SECCOMP_ARCH = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64"}

AF_UNIX, AF_INET, AF_INET6, AF_NETLINK = 1, 2, 10, 16
SOCKET_FAMILIES = (AF_UNIX, AF_INET, AF_INET6, AF_NETLINK)
# Docker's: PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32, and the query 0xffffffff.
PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)
CLONE_NAMESPACE_FLAGS = (
    0x00000080  # CLONE_NEWTIME
    | 0x00020000  # CLONE_NEWNS
    | 0x02000000  # CLONE_NEWCGROUP
    | 0x04000000  # CLONE_NEWUTS
    | 0x08000000  # CLONE_NEWIPC
    | 0x10000000  # CLONE_NEWUSER
    | 0x20000000  # CLONE_NEWPID
    | 0x40000000  # CLONE_NEWNET
)
EPERM, ENOSYS = 1, 38


def allowed_names(machine: str | None = None) -> list[str]:
    """Every syscall allowed without an argument condition, for `machine` (default: ours)."""
    machine = machine or os.uname().machine
    names = [n for n in MOBY_ALLOWED if n not in DENIED]
    return names + [n for n in ARCH_ALLOWED.get(machine, ()) if n not in DENIED]


def profile(machine: str | None = None) -> dict[str, Any]:
    """The OCI `linux.seccomp` object."""
    machine = machine or os.uname().machine
    rules: list[dict[str, Any]] = [{"names": allowed_names(machine), "action": "SCMP_ACT_ALLOW"}]
    for family in SOCKET_FAMILIES:
        rules.append(_allow_if("socket", 0, family))
    for persona in PERSONALITIES:
        rules.append(_allow_if("personality", 0, persona))
    # OCI's MASKED_EQ: (arg & value) == valueTwo. s390 swaps clone's arguments; not a target.
    rules.append(
        {
            "names": ["clone"],
            "action": "SCMP_ACT_ALLOW",
            "args": [
                {
                    "index": 0,
                    "value": CLONE_NAMESPACE_FLAGS,
                    "valueTwo": 0,
                    "op": "SCMP_CMP_MASKED_EQ",
                }
            ],
        }
    )
    rules.append({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS})
    arch = SECCOMP_ARCH.get(machine)
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "architectures": [arch] if arch else [],
        "syscalls": rules,
    }


def _allow_if(name: str, index: int, value: int) -> dict[str, Any]:
    return {
        "names": [name],
        "action": "SCMP_ACT_ALLOW",
        "args": [{"index": index, "value": value, "op": "SCMP_CMP_EQ"}],
    }
