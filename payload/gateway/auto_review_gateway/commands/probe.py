"""``probe``: small real diagnostics for the launcher's integration tests.

Each action does one observable thing inside the sandbox: exit with a status,
wait for a signal, list environment names, create a file, report the ids,
clone a repository over the network with the rootfs's git.
"""

import argparse
import errno
import os
import signal
import time

NAME = "probe"
HELP = "small diagnostics for integration tests: exit, sleep, env, write, whoami, clone, connect"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the probe actions and their arguments."""
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    action = actions.add_parser("exit", help="exit with STATUS (0-255)")
    action.add_argument("status", type=_exit_status, help="0-255")
    action.set_defaults(action_run=_exit)
    action = actions.add_parser("sleep", help='print "ready", sleep; SIGTERM exits 143')
    action.add_argument("seconds", type=float, help="how long to sleep")
    action.set_defaults(action_run=_sleep)
    action = actions.add_parser("env", help="print the names (never values) of the environment")
    action.set_defaults(action_run=_env)
    action = actions.add_parser("write", help='create PATH; print "ok" or the errno name')
    action.add_argument("path", help="the file to create")
    action.set_defaults(action_run=_write)
    action = actions.add_parser("whoami", help="print uid=N gid=N")
    action.set_defaults(action_run=_whoami)
    action = actions.add_parser("clone", help="shallow-clone URL into /tmp; print HEAD and files")
    action.add_argument("url", help="an https:// (or ext::) URL")
    action.set_defaults(action_run=_clone)
    action = actions.add_parser(
        "connect", help='connect to tcp:HOST:PORT or abstract:NAME; print "connected" or the errno'
    )
    action.add_argument("target", help="tcp:HOST:PORT or abstract:NAME")
    action.set_defaults(action_run=_connect)
    action = actions.add_parser(
        "abi", help="getpid through the i386 and x32 ABIs; print how each ended (x86_64)"
    )
    action.set_defaults(action_run=_abi)
    action = actions.add_parser("forks", help="hold up to N children at once; print how many")
    action.add_argument("count", type=int, help="children to hold")
    action.set_defaults(action_run=_forks)
    action = actions.add_parser(
        "alloc", help='allocate and touch MIB MiB; print "allocated", or "refused" (exit 3)'
    )
    action.add_argument("mib", type=int, help="mebibytes")
    action.set_defaults(action_run=_alloc)
    action = actions.add_parser("flock", help="try flock(FD, OP) for OP in un, sh, ex; print each")
    action.add_argument("fd", type=int, help="an fd number this process has")
    action.set_defaults(action_run=_flock)


def run(args: argparse.Namespace) -> int:
    """Run the chosen probe action and return its exit status."""
    return args.action_run(args)


def _exit_status(text: str) -> int:
    status = int(text)
    if not 0 <= status <= 255:
        raise argparse.ArgumentTypeError(f"{status} is not an exit status (0-255)")
    return status


def _exit(args: argparse.Namespace) -> int:
    return args.status


def _terminate(signum: int, frame: object) -> None:
    # The signal can land while print() still holds stdout's lock, where a
    # second print() raises "reentrant call": write the fd and leave at once.
    os.write(1, b"terminated\n")
    os._exit(128 + signum)


def _sleep(args: argparse.Namespace) -> int:
    # As PID 1 of a container a signal left at its default disposition is
    # ignored, so the handler is what makes SIGTERM (and Ctrl-C) stop us.
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    print("ready", flush=True)
    time.sleep(args.seconds)
    return 0


def _env(args: argparse.Namespace) -> int:
    for name in sorted(os.environ):
        print(name)
    return 0


def _write(args: argparse.Namespace) -> int:
    try:
        fd = os.open(args.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, b"probe\n")
        finally:
            os.close(fd)
    except OSError as exc:
        print(errno.errorcode.get(exc.errno, f"errno {exc.errno}"))
        return 1
    print("ok")
    return 0


def _whoami(args: argparse.Namespace) -> int:
    print(f"uid={os.getuid()} gid={os.getgid()}")
    return 0


def _clone(args: argparse.Namespace) -> int:
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(dir="/tmp") as work:
        clone = subprocess.run(
            ["git", "clone", "--quiet", "--depth", "1", args.url, work + "/repo"],
            capture_output=True,
            text=True,
        )
        if clone.returncode != 0:
            print(f"clone failed: {clone.stderr.strip()}")
            return 1
        head = subprocess.run(
            ["git", "-C", work + "/repo", "rev-parse", "HEAD"], capture_output=True, text=True
        )
        files = subprocess.run(
            ["git", "-C", work + "/repo", "ls-files"], capture_output=True, text=True
        )
        print(f"cloned {head.stdout.strip()} {' '.join(files.stdout.split())}")
    return 0


def _connect(args: argparse.Namespace) -> int:
    import socket

    kind, _, rest = args.target.partition(":")
    try:
        if kind == "abstract":
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.connect("\0" + rest)
        else:
            host, _, port = rest.rpartition(":")
            with socket.create_connection((host, int(port)), timeout=5):
                pass
    except OSError as exc:
        code = exc.errno
        print(errno.errorcode.get(code, "timeout") if code else type(exc).__name__)
        return 1
    print("connected")
    return 0


def _flock(args: argparse.Namespace) -> int:
    import fcntl

    results = []
    for name, op in (("un", fcntl.LOCK_UN), ("sh", fcntl.LOCK_SH), ("ex", fcntl.LOCK_EX)):
        try:
            fcntl.flock(args.fd, op | fcntl.LOCK_NB)
            results.append(f"{name}=ok")
        except OSError as exc:
            results.append(f"{name}={errno.errorcode.get(exc.errno, exc.errno)}")
    print(" ".join(results))
    return 0


def _abi(args: argparse.Namespace) -> int:
    from auto_review_gateway.selftest import syscalls

    if os.uname().machine != "x86_64":
        print("n/a")
        return 0
    results = []
    for abi in syscalls.FOREIGN_ABI_GETPID:
        pid = os.fork()
        if pid == 0:
            value = syscalls.foreign_abi_getpid(abi)
            os._exit(0 if value == os.getpid() else (1 if value == -errno.ENOSYS else 2))
        status = os.waitpid(pid, 0)[1]
        if os.WIFSIGNALED(status):
            outcome = f"killed:{signal.Signals(os.WTERMSIG(status)).name}"
        else:
            outcome = {0: "ran", 1: "ENOSYS"}.get(os.WEXITSTATUS(status), "error")
        results.append(f"{abi}={outcome}")
    print(" ".join(results))
    return 0


def _forks(args: argparse.Namespace) -> int:
    gate_r, gate_w = os.pipe()
    children = []
    try:
        for _ in range(args.count):
            try:
                pid = os.fork()
            except OSError:
                break
            if pid == 0:
                os.close(gate_w)
                os.read(gate_r, 1)  # until the parent closes the gate
                os._exit(0)
            children.append(pid)
    finally:
        os.close(gate_w)
        for pid in children:
            os.waitpid(pid, 0)
    print(len(children))
    return 0


def _alloc(args: argparse.Namespace) -> int:
    try:
        block = bytearray(args.mib << 20)
    except MemoryError:  # a memory rlimit refused it (a cgroup limit kills instead)
        print("refused")
        return 3
    for offset in range(0, len(block), 4096):
        block[offset] = 1
    print("allocated")
    return 0
