"""The review's caps, in one place: what a repository under review may cost us.

The repository is the PR author's: anything in it may be built to hurt (a 200 MB
blob, a few KB of pack that inflate to 64 MB of newlines, a pack that never ends).
So every read of it has a cap that does not depend on it, and memory follows the
caps, not the PR. docs/GATEWAY.md ("Budgets and git bounds") has the measurements
behind the numbers and what each cap does when it is reached.
"""

from __future__ import annotations

MiB = 1024 * 1024

# -- the diff (review/diffstream.py, review/context.py)

DEFAULT_MAX_DIFF_BYTES = 4 * MiB  # hunk bytes kept per review (--max-diff-bytes): the
# LLM reviewer cuts them into calls (AR_LLM_CONTEXT_TOKENS, AR_LLM_MAX_CALLS)
MAX_REVIEW_LINES = 500_000  # hunk lines kept per review, whatever their bytes
MAX_FILES = 5_000  # files listed per review; later ones make the diff "capped"
# A file with a blob over either cap, on either side, is "too large to review": listed
# with its size, never diffed. git's diff costs memory per line (~45 bytes a line on
# each side, measured), so lines are capped as well as bytes.
MAX_FILE_BYTES = 8 * MiB
MAX_FILE_LINES = 1_000_000
MAX_RECORD_BYTES = 64 * 1024  # one header line or path in git's output

# -- every git process (review/gitproc.py)

# RLIMIT_DATA of each git process: its heap, not its read-only mmaps of packs. The
# worst diff within the file caps needs about 300 MiB, a fetch about 50 MiB + 100
# bytes an object.
GIT_MEMORY_LIMIT = 1024 * MiB
MAX_GIT_OUTPUT = 16 * MiB  # what one git command may print for us to hold at once
LOCAL_TIMEOUT = 300  # seconds for one local command (a diff of a huge change)

# -- fetching (review/gitproc.py, review/gitrepo.py)

# RLIMIT_FSIZE of a fetch: no file git writes (the pack, its index) grows past it;
# the kernel stops the writer with SIGXFSZ.
MAX_PACK_BYTES = 256 * MiB
MAX_REPO_BYTES = 384 * MiB  # all fetches of one review together (the tmpfs is 512 MiB)
MAX_FETCH_OBJECTS = 5_000_000  # objects a pack may announce in its header
FETCH_TIMEOUT = 900  # seconds for one fetch
