"""The code around a change, read from the head commit's objects (no checkout): for each
hunk the enclosing function or class, and the definitions of the identifiers the added
lines call, use or define, found with one ``git grep`` of the head tree.

Scopes are found by structure, not by parsing: braces for the C family (C, C++, Java,
JavaScript, TypeScript, Go, Rust, C#, Kotlin, Swift, PHP), indentation for Python and
Ruby. Everything is bounded: blobs over MAX_BLOB_BYTES are not read, a scope shows at
most MAX_SCOPE_LINES lines (its header, then the lines around the hunk), ``git grep``
stops after MAX_GREP_BYTES of output and MAX_GREP_PER_FILE matches a file, and the text
returned fits the caller's byte budget. The text is the repository's: the caller fences
it as untrusted data.

Over 300 lines: finding scopes and finding definitions share the blob cache, the scope
finder (a definition's extent is its scope) and the numbered rendering.
"""

from __future__ import annotations

import posixpath
import re
from typing import Protocol

from auto_review_gateway.core.model import FileChange

MAX_BLOB_BYTES = 1024 * 1024
MAX_SCOPE_LINES = 80
MAX_DEFINITION_LINES = 40
MAX_IDENTIFIERS = 24
MAX_IDENTIFIER_CHARS = 64  # a longer "name" is not looked up (it would be the pattern)
MAX_SCAN_LINES = 2000  # a scope's header is looked for this far up, its end this far down
MAX_SCOPES = 64  # per call
MAX_DEFINITIONS = 16
MAX_GREP_BYTES = 256 * 1024
MAX_GREP_PER_FILE = 3
SCOPE_SHARE = 0.6  # of the budget, for enclosing scopes; definitions get the rest

_BRACES = {
    ".c", ".h", ".cc", ".cpp", ".cxx", ".hpp", ".hh", ".java", ".js", ".jsx", ".mjs", ".cjs",
    ".ts", ".tsx", ".go", ".rs", ".cs", ".kt", ".kts", ".swift", ".php", ".scala", ".dart",
}  # fmt: skip
_INDENTED = {".py", ".pyi", ".rb"}
_INDENT_HEADER = re.compile(r"^\s*(?:async\s+def|def|class|module)\s+\S")
_CONTROL_WORDS = (
    "if|else|elif|for|foreach|while|do|switch|case|default|try|catch|finally|with|return"
    "|match|select|loop|defer|go|unless|until|when|using|lock|synchronized|throw|new|yield"
)
_CONTROL = re.compile(rf"^\s*(?:\}}\s*)?(?:{_CONTROL_WORDS})\b")
_STRINGS = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|`[^`]*`|//.*$|#.*$")
_CALL = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]{2,})\s*\(")
_TYPE = re.compile(r"\b([A-Z][A-Za-z0-9_]{2,})\b")
_DEFINE = re.compile(
    r"\b(?:def|function|func|fn|class|struct|interface|trait|type|enum)\s+\*?([A-Za-z_]\w{2,})"
)
_KEYWORDS = frozenset(
    (_CONTROL_WORDS + "|def|class|function|func|fn|struct|interface|trait|type|enum|print"
     "|len|str|int|float|bool|list|dict|set|tuple|range|super|self|this|None|True|False"
     "|null|true|false|sizeof|typeof|instanceof|async|await|lambda|assert|printf|not|and"
     "|isinstance|open|make|append|panic|String|Object|Error|Exception|console|require"
     "|import|from|var|let|const|static|public|private|protected|void|char|long|unsigned"
     ).split("|")
)  # fmt: skip
_KEYWORD_DEF = re.compile(
    r"(?:def|class|function|func|fn|struct|interface|trait|type|enum|module|sub)\s+\*?$"
)
_TYPED_DEF = re.compile(r"^\s*(?:func\s*\([^)]*\)\s*|[\w<>\[\],*&:.\s]*[\w>\]*&]\s*[*&]*)$")


class Result(Protocol):
    """What a finished git process gives (gitproc.Result)."""

    returncode: int
    stdout: bytes


class Source(Protocol):
    """What :func:`gather` needs of a repository (gitrepo.Repo provides it)."""

    def file_at(self, sha: str, path: str) -> bytes: ...
    def grep(
        self, sha: str, patterns: list[str], max_bytes: int, per_file: int, paths: list[str]
    ) -> bytes: ...


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _braces(line: str) -> str:
    """The braces of ``line`` outside strings and line comments, in order."""
    return "".join(c for c in _STRINGS.sub("", line) if c in "{}")


def _indented_scope(lines: list[str], target: int) -> tuple[int, int] | None:
    """(header, last line), 1-based, of the def/class enclosing line ``target``."""
    t = target
    while t <= len(lines) and not lines[t - 1].strip():
        t += 1
    if t > len(lines):
        return None
    level = _indent(lines[t - 1])
    header = 0
    for k in range(t - 1, max(0, t - MAX_SCAN_LINES), -1):
        line = lines[k - 1]
        if line.strip() and _indent(line) < level:
            if _INDENT_HEADER.match(line):
                header = k
                break
            level = _indent(line)
    if not header:
        return None
    top = _indent(lines[header - 1])
    end = header
    for j in range(header + 1, min(len(lines), header + MAX_SCAN_LINES) + 1):
        line = lines[j - 1]
        if not line.strip():
            continue
        if _indent(line) <= top:
            if line.strip() == "end" and _indent(line) == top:  # Ruby closes at the header
                end = j
            break
        end = j
    return header, end


def _brace_scope(lines: list[str], target: int) -> tuple[int, int] | None:
    """(header, last line), 1-based, of the function/class block enclosing ``target``:
    the innermost enclosing block whose header is not a control statement."""
    depth = 0
    k = target - 1
    while k >= max(1, target - MAX_SCAN_LINES):
        for c in reversed(_braces(lines[k - 1])):
            if c == "}":
                depth += 1
            elif depth:
                depth -= 1
            else:
                depth = -1
                break
        if depth == -1:
            depth = 0
            header = k
            if not lines[k - 1].strip().rstrip("{").strip() and k > 1:
                header = k - 1
            if not _CONTROL.match(lines[header - 1]):
                return header, _block_end(lines, k)
        k -= 1
    return None


def _block_end(lines: list[str], opening: int) -> int:
    """The line where the block opened on line ``opening`` closes (or the file's end)."""
    depth = 0
    last = min(len(lines), opening + MAX_SCAN_LINES)
    for j in range(opening, last + 1):
        for c in _braces(lines[j - 1]):
            depth += 1 if c == "{" else -1
            if depth == 0:
                return j
    return last


def scope_of(path: str, lines: list[str], target: int) -> tuple[int, int] | None:
    """The enclosing function or class of line ``target`` of ``path`` (1-based header
    and last line), or None (top level, or a language we do not know)."""
    ext = posixpath.splitext(path)[1].lower()
    if ext in _BRACES:
        return _brace_scope(lines, target)
    if ext in _INDENTED:
        return _indented_scope(lines, target)
    return None


def _numbered(lines: list[str], numbers: list[int]) -> str:
    out, last = [], 0
    for n in numbers:
        if last and n != last + 1:
            out.append(f"{'':>6} ...")
        out.append(f"{n:>6} {lines[n - 1]}")
        last = n
    return "\n".join(out)


def _window(first: int, last: int, around: tuple[int, int], most: int) -> list[int]:
    """Line numbers of ``first..last``: all when they are ``most`` or fewer, else the
    first line and those nearest ``around``."""
    if last - first + 1 <= most:
        return list(range(first, last + 1))
    low = max(first + 1, around[0] - (most - 1) // 2)
    high = min(last, low + most - 2)
    return [first, *range(low, high + 1)]


def identifiers(added: list[str]) -> list[str]:
    """Names the added lines call, then use (capitalised: types), then define."""
    found: dict[str, None] = {}
    for pattern in (_CALL, _TYPE, _DEFINE):
        for line in added:
            for name in pattern.findall(line):
                if name not in _KEYWORDS and len(name) <= MAX_IDENTIFIER_CHARS:
                    found.setdefault(name, None)
    return list(found)[:MAX_IDENTIFIERS]


def grep_patterns(names: list[str]) -> list[str]:
    """``git grep -E`` patterns for lines that may define one of ``names``."""
    ids = "(" + "|".join(names) + ")"
    end = "([^A-Za-z0-9_]|$)"
    return [
        rf"(def|class|function|func|fn|struct|interface|trait|type|enum|module)[[:space:]]+[*]?{ids}{end}",
        rf"^[[:space:]]*[A-Za-z_][A-Za-z0-9_<>,*&:.()[:space:]]*[[:space:]*&)]{ids}[[:space:]]*\(",
        rf"(const|let|var)[[:space:]]+{ids}[[:space:]]*=",
        rf"^[[:space:]]*{ids}[[:space:]]*\([^;]*\)[[:space:]]*\{{",
    ]


def is_code(path: str) -> bool:
    """Whether ``path`` is in a language whose scopes and definitions we know."""
    return posixpath.splitext(path)[1].lower() in _BRACES | _INDENTED


def code_globs() -> list[str]:
    """Pathspecs of the files :func:`is_code` accepts (for ``git grep``)."""
    return [f"*{ext}" for ext in sorted(_BRACES | _INDENTED)]


def _defines(path: str, text: str, name: str) -> bool:
    """Whether a line ``git grep`` found in ``path`` is a definition of ``name``, not a
    use: after a defining keyword anywhere; after a type (or Go's receiver) only in the
    brace languages, where a definition has no keyword."""
    at = re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", text)
    if at is None:
        return False
    before, after = text[: at.start()], text[at.end() :].strip()
    if _KEYWORD_DEF.search(before) or re.search(r"\b(?:const|let|var)\s+$", before):
        return True
    if posixpath.splitext(path)[1].lower() not in _BRACES:
        return False
    if text.rstrip().endswith(";") or _CONTROL.match(text) or not after.startswith("("):
        return False
    return bool(_TYPED_DEF.match(before))


class _Blobs:
    """The head's blobs read so far, as lines (None: missing, binary or too large)."""

    def __init__(self, source: Source, head: str, sizes: dict[str, int]) -> None:
        self.source, self.head, self.sizes = source, head, sizes
        self.cache: dict[str, list[str] | None] = {}

    def lines(self, path: str) -> list[str] | None:
        if path not in self.cache:
            self.cache[path] = None
            if self.sizes.get(path, 0) <= MAX_BLOB_BYTES:
                try:
                    data = self.source.file_at(self.head, path)
                except FileNotFoundError:
                    return None
                if len(data) <= MAX_BLOB_BYTES and b"\0" not in data[:8000]:
                    self.cache[path] = data.decode("utf-8", "replace").splitlines()
        return self.cache[path]


def _scopes(blobs: _Blobs, files: list[FileChange], budget: int) -> tuple[str, set]:
    parts: list[str] = []
    used, shown = 0, set()
    for change in files:
        if change.status == "deleted" or change.binary or change.too_large or not change.hunks:
            continue
        lines = blobs.lines(change.path)
        if lines is None:
            continue
        for hunk in change.hunks:
            if len(shown) >= MAX_SCOPES or budget - used < 200:
                return "\n".join(parts), shown
            end = hunk.new_start + hunk.new_count
            target = min((n for n in change.added if hunk.new_start <= n < end), default=0)
            target = target or hunk.new_start
            found = scope_of(change.path, lines, max(1, min(target, len(lines))))
            if found is None or (change.path, found) in shown:
                continue
            shown.add((change.path, found))
            hunk_end = hunk.new_start + hunk.new_count - 1
            if hunk.new_start <= found[0] and found[1] <= hunk_end:
                continue  # the hunk shows all of it
            numbers = _window(found[0], found[1], (hunk.new_start, hunk_end), MAX_SCOPE_LINES)
            text = (
                f"## enclosing scope of {change.path}:{target}"
                f" (head, lines {found[0]}-{found[1]})\n{_numbered(lines, numbers)}\n"
            )
            if used + len(text.encode()) <= budget:
                parts.append(text)
                used += len(text.encode())
    return "\n".join(parts), shown


def _definitions(source: Source, blobs: _Blobs, head: str, files: list[FileChange],
                 budget: int) -> str:  # fmt: skip
    added = [text for c in files if is_code(c.path) for text in c.added.values()]
    names = identifiers(added)
    if not names or budget <= 0:
        return ""
    raw = source.grep(head, grep_patterns(names), MAX_GREP_BYTES, MAX_GREP_PER_FILE, code_globs())
    changed = {c.path: set(c.added) for c in files}
    parts: list[str] = []
    used, per_name = 0, dict.fromkeys(names, 0)
    for record in raw.split(b"\n"):
        fields = record.split(b"\0")
        if len(fields) < 3 or not fields[1].isdigit():
            continue
        path = fields[0].decode("utf-8", "replace").split(":", 1)[-1]
        number, text = int(fields[1]), fields[2].decode("utf-8", "replace")
        name = next((n for n in names if per_name[n] < 2 and _defines(path, text, n)), None)
        if name is None or number in changed.get(path, ()):
            continue  # a use, not a definition; or a line the diff already shows
        lines = blobs.lines(path)
        if lines is None or number > len(lines):
            continue
        found = scope_of(path, lines, number + 1)
        last = found[1] if found and found[0] == number else number
        numbers = list(range(number, min(last, number + MAX_DEFINITION_LINES - 1) + 1))
        body = _numbered(lines, numbers)
        if last > numbers[-1]:
            body += f"\n{'':>6} ... ({last - numbers[-1]} more lines)"
        block = f"## definition of {name}: {path} (head, line {number})\n{body}\n"
        if used + len(block.encode()) > budget:
            continue
        parts.append(block)
        used += len(block.encode())
        per_name[name] += 1
        if len(parts) >= MAX_DEFINITIONS:
            break
    return "\n".join(parts)


def gather(source: Source, head: str, files: list[FileChange], budget: int) -> str:
    """The enclosing scopes of ``files``' hunks and the definitions their added lines
    need, as numbered head lines, in at most ``budget`` bytes ("" when none)."""
    if budget <= 0:
        return ""
    blobs = _Blobs(source, head, {c.path: c.size for c in files})
    scopes, _ = _scopes(blobs, files, int(budget * SCOPE_SHARE))
    used = len(scopes.encode()) + 1
    definitions = _definitions(source, blobs, head, files, budget - used)
    return "\n".join(part for part in (scopes, definitions) if part)
