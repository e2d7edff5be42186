"""Files an operator names by a variable (a CA bundle, a GitHub App key), read bounded:
a regular file only (a symlink to one is fine), opened non-blocking so a FIFO cannot
hang the read, never more than the cap, even of a file that grows meanwhile.

The launcher's launcher/hostfile.py is its twin on the host side: gateway.pyz carries
no launcher code (nor the launcher any gateway code), so each side has its own."""

import os
import stat


class FileRefused(Exception):
    """Why the file was not read, worded to follow ``VARIABLE=path``."""


def read_regular_file(path: str, cap: int) -> bytes:
    """The content of `path`, at most `cap` bytes; FileRefused otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise FileRefused(f": {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileRefused(" is not a regular file")
        if st.st_size > cap:
            raise FileRefused(f" is {st.st_size} bytes, over {_size(cap)}")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(cap + 1)
    except OSError as exc:
        raise FileRefused(f": {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > cap:
        raise FileRefused(f" is over {_size(cap)}")
    return data


def _size(size: int) -> str:
    return f"{size >> 20} MiB" if size >= 1 << 20 else f"{size >> 10} KiB"
