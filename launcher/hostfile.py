"""Host files that environment variables name (AUTO_REVIEW_CA_FILE,
GITHUB_APP_PRIVATE_KEY_FILE), read bounded by the launcher.

Only a regular file is read (a symlink to one is fine): never a device, FIFO or
socket, which could block or never end. The open is non-blocking, so a FIFO
cannot hang it before the check, and no more than the cap is ever read, even of
a file that grows meanwhile. Failures are ConfigErrors naming the variable and
the path, never the content.
"""

from __future__ import annotations

import os
import stat

from launcher.errors import ConfigError


def size_text(size: int) -> str:
    """`size` bytes as the message says it: 16 MiB, 64 KiB, 100 bytes."""
    if size >= 1 << 20 and not size % (1 << 20):
        return f"{size >> 20} MiB"
    if size >= 1 << 10 and not size % (1 << 10):
        return f"{size >> 10} KiB"
    return f"{size} bytes"


def read_regular_file(variable: str, path: str, cap: int, fix: str) -> bytes:
    """The content of `path` (the value of `variable`): a regular file of at most
    `cap` bytes, else ConfigError(f"{variable}={path} ...", fix)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(f"{variable}={path}: {exc.strerror}", fix) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{variable}={path} is not a regular file", fix)
        if st.st_size > cap:
            raise ConfigError(
                f"{variable}={path} is {st.st_size} bytes, over {size_text(cap)}", fix
            )
        chunks, size = [], 0
        while size <= cap:
            chunk = os.read(fd, min(1 << 20, cap + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise ConfigError(f"{variable}={path}: {exc.strerror}", fix) from None
    finally:
        os.close(fd)
    if size > cap:  # it grew while read
        raise ConfigError(f"{variable}={path} is over {size_text(cap)}", fix)
    return b"".join(chunks)
