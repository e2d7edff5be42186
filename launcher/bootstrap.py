"""auto-review: the single file. Runs the launcher from inside this zipapp.

build.py writes this file as the zipapp's __main__.py with CODE_ID filled in. It runs
before anything else on any python3, so it uses nothing newer than the check below.
"""

import os
import sys

if sys.version_info < (3, 10):  # noqa: UP036 - the one place an older Python gets here
    sys.exit("auto-review: needs Python 3.10 or newer -- run it with python3.10+")
CODE_ID = "@CODE_ID@"


def cached_code():
    """The launcher's code unpacked in the cache (with .pyc), if every level is ours.

    zipimport compiles each module on every start; the cached copy does not. Same
    root as launcher.layout.cache_root; a mismatch only means running from the zip.
    """
    path = os.environ.get("AUTO_REVIEW_CACHE_DIR")
    if not path:
        xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
        base = xdg if os.path.isabs(xdg) else os.path.join(os.path.expanduser("~"), ".cache")
        path = os.path.join(base, "auto-review")
    for part in ("v1", "code", CODE_ID, None):
        try:
            st = os.lstat(path)
        except OSError:
            return None
        if st.st_uid != os.geteuid() or st.st_mode & 0o170022 != 0o040000:
            return None  # not a real directory of ours, or writable by others
        if part:
            path = os.path.join(path, part)
    return path if os.path.exists(os.path.join(path, ".complete")) else None


code = cached_code()
if code:
    sys.path.insert(0, code)
from launcher.cli import main  # noqa: E402

sys.exit(main())
