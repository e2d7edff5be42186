"""One ``git fetch`` of a review, within the fetch caps (``budgets.py``).

The server is the PR author's too: a pack may inflate without end, announce a hundred
million objects, or never end. So a fetch runs with:

* RLIMIT_FSIZE at MAX_PACK_BYTES (less when the repository is near MAX_REPO_BYTES):
  with transfer.unpackLimit=1 everything fetched goes through ``index-pack`` into one
  pack file, and the kernel stops index-pack (SIGXFSZ) when it reaches the cap;
* RLIMIT_DATA at GIT_MEMORY_LIMIT, like every git: index-pack allocates its table of
  objects from the count the pack's header announces, so an absurd count fails at once;
* a watch, four times a second, on the header of the pack being received (its object
  count against MAX_FETCH_OBJECTS) and on the repository's size (MAX_REPO_BYTES);
* FETCH_TIMEOUT, and git's low-speed check (``gitproc.GIT_OPTIONS``).

A cap reached is a one-line ReviewError (EXIT_CLONE) that names it; the process group
is killed, what it wrote goes with the caller's work dir.

Partial clone (``--filter=blob:limit=``) is not used: the server may not offer it, and
on git 2.39 a later ``git diff`` either fetches each filtered blob it touches lazily
(no GIT_NO_LAZY_FETCH before 2.44) or, without a promisor remote, dies on the first
missing one.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from auto_review_gateway.core.model import EXIT_CLONE, ReviewError
from auto_review_gateway.review import gitproc
from auto_review_gateway.review.budgets import (
    FETCH_TIMEOUT,
    MAX_FETCH_OBJECTS,
    MAX_PACK_BYTES,
    MAX_REPO_BYTES,
    MiB,
)


def fetch(
    git: Callable[..., gitproc.Result], git_dir: str, shown: str, *args: str
) -> gitproc.Result:
    """Run ``git <args>`` (a fetch into ``git_dir``, from the URL shown as ``shown``)
    through ``git`` (``Repo.git``) within the caps; its result when no cap was reached
    (the caller reads a failure), else ReviewError(EXIT_CLONE) naming the cap."""
    room = MAX_REPO_BYTES - _disk_usage(git_dir)
    if room <= 0:
        raise ReviewError(f"could not fetch {shown}: {_repo_cap()}", EXIT_CLONE)
    cap = min(MAX_PACK_BYTES, room)
    proc = git(*args, timeout=FETCH_TIMEOUT, file_size=cap, watch=_watch(git_dir, shown))
    if proc.returncode != 0:
        # index-pack writes tmp_pack_* and tmp_idx_*; earlier fetches' packs do not count
        if any(size >= cap for name, size in _packs(git_dir) if name.startswith("tmp_")):
            reason = _pack_cap() if cap == MAX_PACK_BYTES else _repo_cap()
            raise ReviewError(f"could not fetch {shown}: {reason}", EXIT_CLONE)
        if gitproc.out_of_memory(proc.stderr):
            reason = f"git ran out of memory: {gitproc.memory_cap()}"
            raise ReviewError(f"could not fetch {shown}: {reason}", EXIT_CLONE)
    return proc


def _packs(git_dir: str) -> list[tuple[str, int]]:
    """(name, size) of the files in the repository's pack dir (where index-pack writes)."""
    pack_dir = os.path.join(git_dir, "objects", "pack")
    try:
        with os.scandir(pack_dir) as entries:
            return [(e.name, e.stat(follow_symlinks=False).st_size) for e in entries]
    except OSError:
        return []


def _disk_usage(git_dir: str) -> int:
    """Bytes of the files under ``git_dir`` (a fetched repository: a few packs, no loose
    objects, as transfer.unpackLimit=1 has every fetch keep its pack)."""
    total = 0
    for top, _dirs, files in os.walk(git_dir):
        for name in files:
            try:
                total += os.lstat(os.path.join(top, name)).st_size
            except OSError:
                pass
    return total


def _pack_cap() -> str:
    return f"the pack outgrew the {MAX_PACK_BYTES // MiB} MiB cap of a fetch"


def _repo_cap() -> str:
    return f"the repository outgrew the {MAX_REPO_BYTES // MiB} MiB cap of a review"


def _watch(git_dir: str, shown: str) -> Callable[[], str | None]:
    """What a fetch checks about four times a second: the object count the pack being
    received announces in its header, and the repository's size."""

    def watch() -> str | None:
        for name, _size in _packs(git_dir):
            if not name.startswith("tmp_pack_"):
                continue
            try:
                with open(os.path.join(git_dir, "objects", "pack", name), "rb") as fh:
                    header = fh.read(12)
            except OSError:
                continue
            count = int.from_bytes(header[8:12], "big") if header[:4] == b"PACK" else 0
            if count > MAX_FETCH_OBJECTS:
                return (f"could not fetch {shown}: the pack announces {count} objects, over "
                        f"the cap of {MAX_FETCH_OBJECTS} objects of a fetch")  # fmt: skip
        if _disk_usage(git_dir) > MAX_REPO_BYTES:
            return f"could not fetch {shown}: {_repo_cap()}"
        return None

    return watch
