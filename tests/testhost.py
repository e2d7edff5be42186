"""A remote host for tests: a network namespace of its own, joined to the host by a veth
pair, with servers started inside it (a socket belongs to the namespace of the thread
that creates it). Needs root and iproute2."""

from __future__ import annotations

import ctypes
import os
import subprocess
import threading
from collections.abc import Callable
from typing import TypeVar

CLONE_NEWNET = 0x40000000
T = TypeVar("T")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class TestHost:
    """`ip netns` NAME with HOST_ADDR on our side of the veth pair and ADDR on its side."""

    __test__ = False  # not a pytest test class

    def __init__(self, tag: str, subnet: int) -> None:
        suffix = f"{os.getpid() % 100000}{tag}"
        self.name = f"ar-th-{suffix}"
        self.outer, self.inner = f"arh{suffix}"[:15], f"art{suffix}"[:15]
        self.host_addr = f"10.253.{subnet}.1"
        self.addr = f"10.253.{subnet}.2"

    def __enter__(self) -> TestHost:
        _ip("netns", "add", self.name)
        try:
            _ip("link", "add", self.outer, "type", "veth", "peer", "name", self.inner,
                "netns", self.name)  # fmt: skip
            _ip("addr", "add", f"{self.host_addr}/30", "dev", self.outer)
            _ip("link", "set", self.outer, "up")
            _ip("-n", self.name, "addr", "add", f"{self.addr}/30", "dev", self.inner)
            _ip("-n", self.name, "link", "set", self.inner, "up")
            _ip("-n", self.name, "link", "set", "lo", "up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        subprocess.run(["ip", "link", "del", self.outer], capture_output=True)

    def inside(self, call: Callable[[], T]) -> T:
        """Run `call` in a thread that has joined this namespace; return its result."""
        result: list[T] = []
        errors: list[BaseException] = []

        def run() -> None:
            try:
                fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY | os.O_CLOEXEC)
                try:
                    if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns")
                finally:
                    os.close(fd)
                result.append(call())
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=run, name=f"in {self.name}")
        thread.start()
        thread.join()
        if errors:
            raise errors[0]
        return result[0]
