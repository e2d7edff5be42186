"""Placeholder until the fd-based walker lands: remove a tree without following symlinks."""

from __future__ import annotations

import os
import shutil


def remove_tree(path: str) -> None:
    """Remove `path` (a file, a symlink or a tree); a missing path is fine."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        return
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        os.unlink(path)
