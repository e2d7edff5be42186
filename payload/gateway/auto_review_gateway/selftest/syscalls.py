"""Thin libc wrappers for the syscalls a sandboxed process must be refused.

Each wrapper returns 0 on success or the errno of the failure, never raises.
"""

import ctypes
import errno
import os
from collections.abc import Callable

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
PTRACE_TRACEME = 0

_CHILD_RAISED = 255

# dlopen(NULL): the interpreter's own symbols, libc included; no ctypes.util
# lookup, which would need ldconfig or a compiler.
_libc = ctypes.CDLL(None, use_errno=True)
_libc.unshare.argtypes = (ctypes.c_int,)
_libc.unshare.restype = ctypes.c_int
_libc.mount.argtypes = (
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_void_p,
)
_libc.mount.restype = ctypes.c_int
_libc.ptrace.restype = ctypes.c_long  # variadic in glibc: no argtypes


def errno_name(code: int) -> str:
    """The symbolic name of an errno value, e.g. ``EROFS``."""
    return errno.errorcode.get(code, f"errno {code}")


def _errno_of(result: int) -> int:
    return ctypes.get_errno() if result == -1 else 0


def unshare(flags: int) -> int:
    """unshare(2); 0 or errno."""
    if hasattr(os, "unshare"):  # Python 3.12+
        try:
            os.unshare(flags)
        except OSError as exc:
            return exc.errno
        return 0
    return _errno_of(_libc.unshare(flags))


def mount(source: str | None, target: str, fstype: str | None, flags: int) -> int:
    """mount(2) without filesystem data; 0 or errno."""

    def encode(text: str | None) -> bytes | None:
        return None if text is None else os.fsencode(text)

    return _errno_of(_libc.mount(encode(source), encode(target), encode(fstype), flags, None))


def ptrace_traceme() -> int:
    """ptrace(PTRACE_TRACEME); 0 or errno."""
    return _errno_of(_libc.ptrace(PTRACE_TRACEME, 0, None, None))


def in_child(call: Callable[[], int]) -> int:
    """Run ``call`` in a forked child and return the errno it returned (0: success).

    Whatever the call changes when it succeeds (a new namespace, being traced, a
    mount) dies with the child instead of altering this process.
    """
    pid = os.fork()
    if pid == 0:
        code = _CHILD_RAISED
        try:
            code = call()
        finally:
            os._exit(code)
    status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if status < 0:
        raise ChildProcessError(f"probe child killed by signal {-status}")
    if status == _CHILD_RAISED:
        raise ChildProcessError("probe child raised an exception")
    return status


# x86_64 machine code for getpid through the other ABIs the kernel may accept:
# i386 (`mov eax, 20; int 0x80; ret`) and x32 (`mov eax, 0x40000027; syscall; ret`).
FOREIGN_ABI_GETPID = {
    "i386": bytes.fromhex("b814000000cd80c3"),
    "x32": bytes.fromhex("b8270000400f05c3"),
}


def foreign_abi_getpid(abi: str) -> int:
    """Call getpid through `abi` (see FOREIGN_ABI_GETPID); the raw return value.

    Run it in a child (``in_child`` cannot carry the value, so callers fork and read
    the exit status): a seccomp filter may kill the process instead of returning.
    """
    import mmap

    code = FOREIGN_ABI_GETPID[abi]
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(code)
    address = ctypes.addressof(ctypes.c_char.from_buffer(page))
    return ctypes.CFUNCTYPE(ctypes.c_int)(address)()


PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_IS_SET = 1
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
CAP_LAST_MAX = 63  # probe every bit the kernel could define


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


def capget() -> dict[str, int]:
    """The effective, permitted and inheritable sets from capget(2) (64-bit masks).

    Where /proc/self/status lacks a line (gVisor has no CapAmb), the syscall is the
    kernel's own answer."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if _libc.capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget")
    return {
        name: getattr(data[0], name) | (getattr(data[1], name) << 32)
        for name in ("effective", "permitted", "inheritable")
    }


def ambient_caps() -> int:
    """The ambient set, probed one capability at a time with prctl(PR_CAP_AMBIENT_IS_SET)."""
    mask = 0
    for cap in range(CAP_LAST_MAX + 1):
        if _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, cap, 0, 0) == 1:
            mask |= 1 << cap
    return mask


def no_new_privs() -> int:
    """prctl(PR_GET_NO_NEW_PRIVS): 1 when set, 0 when not, -1 with errno on failure."""
    return _libc.prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)
