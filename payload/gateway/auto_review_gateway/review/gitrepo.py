"""Hermetic, bounded git for a review: fetch two commits over HTTPS, or read a local
checkout in place.

Every git process is started by ``gitproc`` (the hermetic environment and options,
the rlimits, the caps on what it prints); the caps themselves are in ``budgets.py``.
A fetch is bounded in pack size (RLIMIT_FSIZE), objects (a watch on the pack's
header), memory (RLIMIT_DATA), the whole repository's size and time; before the diff,
the files over a file cap are found from git's object sizes, so that git never
diffs them.

Over 300 lines: every git command of a review is built here, so what the review asks
of a repository, and the bounds on each answer, have one owner.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Callable, Iterator

from auto_review_gateway.core import names
from auto_review_gateway.core.model import EXIT_BAD_REF, EXIT_CLONE, FileChange, ReviewError
from auto_review_gateway.review import gitfetch, gitproc, gitsizes
from auto_review_gateway.review.budgets import (
    LOCAL_TIMEOUT,
    MiB,
)
from auto_review_gateway.review.gitproc import GIT_OPTIONS, git_env

FIRST_DEPTH = 50
MAX_DEEPEN_ROUNDS = 6  # 50 + 50 + 100 + ... + 1600 commits, then --unshallow
MAX_PATHSPEC_BYTES = 1 * MiB  # the files left out of a diff, on its command line
_BASE_REF = "refs/auto-review/base"
_HEAD_REF = "refs/auto-review/head"
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s'\"]*@")
# Server answers that mean "that ref or commit is not there", not "could not connect".
_MISSING_REF = (
    "couldn't find remote ref",
    "not our ref",
    "unadvertised object",
    "no such remote ref",
)
# Pinned so that no repository setting (noprefix, relative, submodule logs, external
# drivers, textconv, another algorithm) can change the format we parse or its cost.
_DIFF_OPTIONS = (
    "--no-color", "--no-ext-diff", "--no-textconv", "-M", "--unified=3",
    "--src-prefix=a/", "--dst-prefix=b/", "--no-relative", "--submodule=short",
    "--diff-algorithm=myers",
)  # fmt: skip


def redact(text: str, url: str = "") -> str:
    """``text`` without any URL userinfo (``user:token@``), nor the secret of ``url``'s.

    The secret is the password, or a user name long enough to be a token
    (``https://<token>@host``); a short name such as "git" is left alone.
    """
    text = _USERINFO.sub(r"\1", text)
    match = re.match(r"(?i)[a-z][a-z0-9+.-]*://([^/@]*)@", url)
    if match:
        from urllib.parse import unquote

        userinfo = match.group(1)
        for form in {userinfo, unquote(userinfo)}:
            user, colon, password = form.partition(":")
            secret = password if colon else user if len(user) >= 8 else ""
            if len(secret) >= 3:  # blanking "a" everywhere would garble the message
                text = text.replace(secret, "***")
    return text


_last_line = gitproc.last_line


def _check_ref(ref: str) -> None:
    # Refs become command-line arguments: one starting with "-" would be an option.
    if not ref or ref.startswith("-") or any(c.isspace() or ord(c) < 32 for c in ref):
        raise ReviewError(f"not a valid git ref: {ref!r}", EXIT_BAD_REF)


class Repo:
    """A git directory with the base and head commits resolved to SHAs."""

    def __init__(self, git_dir: str, home: str) -> None:
        """Wrap ``git_dir``; git runs with ``home`` as HOME. Call :meth:`resolve` next."""
        self.git_dir = git_dir
        self.env = git_env(home)
        self.base = ""
        self.head = ""
        self._raw_paths: dict[str, bytes] = {}  # shown path -> the repository's bytes

    def _cmd(self, *args: str) -> list[str]:
        return ["git", "--no-pager", *GIT_OPTIONS, "--git-dir", self.git_dir, *args]

    def git(
        self,
        *args: str,
        input: bytes | None = None,
        timeout: float = LOCAL_TIMEOUT,
        file_size: int | None = None,
        watch: Callable[[], str | None] | None = None,
    ) -> gitproc.Result:
        """Run ``git <args>`` on this repository, bounded (see ``gitproc.run``); never
        raises for git's exit status."""
        first = 0
        while args[first] == "-c":  # the command's name comes after any "-c name=value"
            first += 2
        return gitproc.run(
            self._cmd(*args), self.env, args[first], input=input, timeout=timeout,
            file_size=file_size, watch=watch,
        )  # fmt: skip

    def _output(self, *args: str) -> str:
        proc = self.git(*args)
        if proc.returncode != 0:
            raise ReviewError(f"git {args[0]} failed: {_last_line(proc.stderr)}", EXIT_CLONE)
        return proc.stdout.decode(errors="replace").strip()

    def rev_parse(self, ref: str) -> str:
        """The commit SHA ``ref`` names here; ReviewError(EXIT_BAD_REF) if none."""
        _check_ref(ref)
        proc = self.git("rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}")
        if proc.returncode != 0:
            raise ReviewError(f"unknown ref {ref!r}: no such commit", EXIT_BAD_REF)
        return proc.stdout.decode().strip()

    def resolve(self, base: str, head: str) -> None:
        """Set :attr:`base` and :attr:`head` to the SHAs of the given refs."""
        self.base = self.rev_parse(base)
        self.head = self.rev_parse(head)

    def find_merge_base(self) -> str | None:
        """The best common ancestor of base and head, or None when (so far) there is none."""
        proc = self.git("merge-base", self.base, self.head)
        if proc.returncode == 1 and not proc.stdout.strip():
            return None
        if proc.returncode != 0:
            raise ReviewError(f"git merge-base failed: {_last_line(proc.stderr)}", EXIT_CLONE)
        return proc.stdout.decode().strip()

    def merge_base(self) -> str:
        """The best common ancestor of base and head; ReviewError(EXIT_BAD_REF) if none."""
        found = self.find_merge_base()
        if found is None:
            shallow = self.git("rev-parse", "--is-shallow-repository").stdout.strip() == b"true"
            hint = " (the repository is shallow: fetch more history)" if shallow else ""
            raise ReviewError(
                f"base {self.base[:12]} and head {self.head[:12]} have no common ancestor{hint}",
                EXIT_BAD_REF,
            )
        return found

    def is_ancestor(self, older: str, newer: str) -> bool:
        """True when commit ``older`` is here and an ancestor of ``newer`` (or the same)."""
        if not (names.is_sha(older) and names.is_sha(newer)):
            return False
        return self.git("merge-base", "--is-ancestor", older, newer).returncode == 0

    def changed_paths(self, since: str, head: str) -> list[str]:
        """The paths changed from ``since`` to ``head`` (renames as their new path)."""
        proc = self.git("diff", "--name-only", "-z", "--no-renames", "--end-of-options",
                        since, head)  # fmt: skip
        if proc.returncode != 0:
            raise ReviewError(f"git diff failed: {_last_line(proc.stderr)}", EXIT_CLONE)
        return [p.decode(errors="replace") for p in proc.stdout.split(b"\0") if p]

    def has_merges(self, since: str, head: str) -> bool:
        """Whether a merge commit lies between ``since`` and ``head``."""
        proc = self.git("rev-list", "--merges", "--max-count=1", "--end-of-options",
                        f"{since}..{head}")  # fmt: skip
        return proc.returncode != 0 or bool(proc.stdout.strip())

    def renames(self, since: str, head: str) -> dict[str, str]:
        """Old path -> new path of the files renamed from ``since`` to ``head`` ({} when
        ``since`` is not here)."""
        proc = self.git("diff", "-M", "--name-status", "-z", "--diff-filter=R",
                        "--end-of-options", since, head)  # fmt: skip
        if proc.returncode != 0:
            return {}
        parts = [p.decode(errors="replace") for p in proc.stdout.split(b"\0")]
        return {parts[i + 1]: parts[i + 2] for i in range(0, len(parts) - 2, 3)
                if parts[i].startswith("R")}  # fmt: skip

    def oversized(self, merge_base: str, head: str) -> list[FileChange]:
        """The changed files over a file cap on either side, ``too_large`` set (see
        ``gitsizes.oversized``): :meth:`open_diff` is to leave them out."""
        found = []
        for change, raw in gitsizes.oversized(self._cmd, self.env, merge_base, head):
            self._raw_paths[change.path] = raw
            found.append(change)
        return found

    @contextlib.contextmanager
    def open_diff(
        self, merge_base: str, head: str, leave_out: list[str]
    ) -> Iterator[gitproc.Stream]:
        """``git diff`` from ``merge_base`` to ``head`` (unified, 3 lines of context, renames
        found) without the files ``leave_out``, as a stream read while git writes it."""
        raw = [self._raw_paths.get(path, path.encode()) for path in leave_out]
        specs = [":(exclude,literal)" + os.fsdecode(path) for path in raw]
        if sum(len(spec) + 1 for spec in specs) > MAX_PATHSPEC_BYTES:
            raise ReviewError(
                f"{len(specs)} files are too large to review: too many to leave out of the diff",
                EXIT_CLONE,
            )
        cmd = self._cmd("diff", *_DIFF_OPTIONS, "--end-of-options", merge_base, head)
        if specs:
            cmd += ["--", *specs]
        with gitproc.stream(cmd, self.env, "diff") as running:
            yield running

    def file_at(self, sha: str, path: str) -> bytes:
        """The content of ``path`` at commit ``sha``; FileNotFoundError if it has none."""
        proc = self.git("cat-file", "blob", f"{sha}:{path}")
        if proc.returncode != 0:
            raise FileNotFoundError(f"{path} does not exist at {sha[:12]}")
        return proc.stdout

    def size_at(self, sha: str, path: str) -> int:
        """The size in bytes of ``path`` at commit ``sha``; FileNotFoundError if it has none."""
        proc = self.git("cat-file", "-s", f"{sha}:{path}")
        if proc.returncode != 0:
            raise FileNotFoundError(f"{path} does not exist at {sha[:12]}")
        return int(proc.stdout)

    def grep(
        self, sha: str, patterns: list[str], max_bytes: int, per_file: int, paths: list[str]
    ) -> bytes:
        """``git grep -E`` of the tree at ``sha`` (no checkout) for any of ``patterns``, in
        the files matching the ``paths`` globs: ``<sha>:<path>\\0<line>\\0<text>``
        records, at most ``per_file`` a file, cut after ``max_bytes`` of output (git is
        then stopped). b"" when nothing matches."""
        args = ["grep", "-I", "-n", "-z", "-E", "--no-color", f"--max-count={per_file}"]
        for pattern in patterns:
            args += ["-e", pattern]
        out = bytearray()
        # context is a help: a grep that takes long is given up (ReviewError), not awaited
        cmd = self._cmd(*args, sha, "--", *[":(glob)**/" + glob for glob in paths])
        running = gitproc.Stream(cmd, self.env, "grep", timeout=30)
        try:
            while len(out) < max_bytes and (data := running.read1(64 * 1024)):
                out += data
        finally:
            running.close(check=False)  # killed if cut; status 1 is "no match"
        return bytes(out[:max_bytes])

    def sizes_at(self, sha: str, paths: list[str]) -> dict[str, int]:
        """Sizes of many files at ``sha`` with one git process (missing files are left out)."""
        batch = [p for p in paths if "\n" not in p]
        sizes: dict[str, int] = {}
        if batch:
            text = "".join(f"{sha}:{p}\n" for p in batch).encode()
            proc = self.git("cat-file", "--batch-check=%(objectsize)", input=text)
            if proc.returncode != 0:
                raise ReviewError(f"git cat-file failed: {_last_line(proc.stderr)}", EXIT_CLONE)
            for path, answer in zip(batch, proc.stdout.decode().split("\n"), strict=False):
                if answer.isdigit():
                    sizes[path] = int(answer)
        for path in paths:
            if "\n" in path:
                try:
                    sizes[path] = self.size_at(sha, path)
                except FileNotFoundError:
                    pass
        return sizes


def open_path(path: str, base: str, head: str) -> Repo:
    """Read the existing checkout (or bare repository) at ``path`` in place, without writing.

    ReviewError: EXIT_CLONE if ``path`` is not a git repository, EXIT_BAD_REF
    if ``base`` or ``head`` does not name a commit there.
    """
    top = os.path.abspath(path)
    if not os.path.isdir(top):
        raise ReviewError(f"{path}: not a directory", EXIT_CLONE)
    env = git_env(tempfile.gettempdir())
    # Look at `top` itself only, never at a repository that happens to enclose it.
    env["GIT_CEILING_DIRECTORIES"] = os.path.dirname(top)
    cmd = ["git", "--no-pager", *GIT_OPTIONS, "-C", top, "rev-parse", "--absolute-git-dir"]
    proc = gitproc.run(cmd, env, "rev-parse")
    if proc.returncode != 0:
        raise ReviewError(f"{path}: not a git repository", EXIT_CLONE)
    repo = Repo(proc.stdout.decode(errors="surrogateescape").strip(), tempfile.gettempdir())
    repo.resolve(base, head)
    return repo


def clone(
    url: str,
    base: str,
    head: str,
    workdir: str,
    *,
    allow_http: bool = False,
    follow_redirects: bool = True,
) -> Repo:
    """Fetch ``base`` and ``head`` (branch, tag or full SHA) of ``url`` into ``workdir``.

    Shallow first, then deeper until base and head share an ancestor. Only the
    two commits' history is fetched, into a bare repository: no checkout.
    ReviewError: EXIT_CLONE when the server cannot be reached or refuses us,
    EXIT_BAD_REF when a ref is not on the server. Messages never carry the
    URL's userinfo. ``allow_http`` lets git use plain HTTP for this URL (an ``http://``
    forge the operator configured); redirects are then refused, so that nothing but
    that URL is fetched over it. ``follow_redirects=False`` refuses them for https too, as
    does ``user:token@`` in the URL (a fetch with a token: git sends it to wherever a
    redirect points); git then fails with "The requested URL returned error: 3xx".
    """
    _check_ref(base)
    _check_ref(head)
    shown = redact(url)
    if not url or url.startswith("-"):
        raise ReviewError(f"not a repository URL: {shown!r}", EXIT_CLONE)
    home = os.path.join(workdir, "home")
    git_dir = os.path.join(workdir, "repo.git")
    os.makedirs(home, exist_ok=True)
    repo = Repo(git_dir, home)
    # `git init` runs before the directory is a repository: --git-dir names what to create.
    proc = repo.git("init", "--quiet", "--bare")
    if proc.returncode != 0:
        raise ReviewError(f"git init failed: {_last_line(proc.stderr)}", EXIT_CLONE)
    refspecs = [f"+{base}:{_BASE_REF}", f"+{head}:{_HEAD_REF}"]

    options: tuple[str, ...] = ()
    if allow_http and url.lower().startswith("http://"):
        options += ("-c", "protocol.http.allow=always")
    if options or not follow_redirects or _USERINFO.match(url):
        options += ("-c", "http.followRedirects=false")

    def fetch(*how: str) -> None:
        proc = gitfetch.fetch(
            repo.git, git_dir, shown,
            *options,
            "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--no-recurse-submodules",
            *how, "--end-of-options", url, *refspecs,
        )  # fmt: skip
        if proc.returncode != 0:
            last = redact(_last_line(proc.stderr), url)
            if last.startswith(("fatal: ", "error: ")):
                last = last.split(": ", 1)[1]
            if any(s in proc.stderr.decode(errors="replace") for s in _MISSING_REF):
                raise ReviewError(f"{shown}: no ref {base!r} or {head!r}: {last}", EXIT_BAD_REF)
            raise ReviewError(f"could not fetch {shown}: {last}", EXIT_CLONE)

    fetch(f"--depth={FIRST_DEPTH}")
    shas = []
    for ref, name in ((_BASE_REF, base), (_HEAD_REF, head)):
        try:
            shas.append(repo.rev_parse(ref))
        except ReviewError:
            raise ReviewError(f"{name!r} does not name a commit in {shown}", EXIT_BAD_REF) from None
    repo.base, repo.head = shas
    deepen = FIRST_DEPTH
    for round_ in range(MAX_DEEPEN_ROUNDS + 1):
        if repo.find_merge_base() is not None:
            break
        if repo._output("rev-parse", "--is-shallow-repository") != "true":
            break  # whole history here and still no common ancestor: merge_base() says so
        if round_ < MAX_DEEPEN_ROUNDS:
            fetch(f"--deepen={deepen}")
            deepen *= 2
        else:
            fetch("--unshallow")
    return repo
