"""The repository's ``.auto_review.yaml``: strict validation, one-line errors (EXIT_CONFIG)."""

from __future__ import annotations

from auto_review_gateway.core.model import EXIT_CONFIG, RepoConfig, ReviewError

FILENAME = ".auto_review.yaml"
MAX_FILE_BYTES = 64 * 1024
MAX_GUIDELINES_BYTES = 8 * 1024
KEYS = ("enabled", "ignored_paths", "guidelines", "skip_paths")
# A PR that changes only such files gets a success status without a review: lock files,
# vendored and generated code (``skip_paths`` in the file replaces this list).
DEFAULT_SKIP_PATHS = (
    "*.lock", "package-lock.json", "npm-shrinkwrap.json", "pnpm-lock.yaml", "go.sum",
    "*.lockb", "vendor/", "third_party/", "node_modules/", "*.min.js", "*.min.css",
    "*.pb.go", "*_pb2.py", "*_pb2_grpc.py", "*.generated.*", "*.g.dart",
)  # fmt: skip


def skip_paths(config: RepoConfig) -> list[str]:
    """The globs of files a PR may change without being reviewed."""
    return list(DEFAULT_SKIP_PATHS) if config.skip_paths is None else config.skip_paths


def _fail(message: str, line: int | None = None) -> ReviewError:
    where = f" line {line}" if line is not None else ""
    return ReviewError(f"{FILENAME}{where}: {' '.join(message.split())}", EXIT_CONFIG)


def _type_name(value: object) -> str:
    names = {type(None): "null", bool: "a boolean", int: "a number", float: "a number",
             str: "a string", list: "a list", dict: "a mapping"}  # fmt: skip
    return names.get(type(value), type(value).__name__)


def _cap(text: str, limit: int) -> str:
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[:limit].decode(errors="ignore")  # cut at a character boundary


def load(text: str | None) -> RepoConfig:
    """Validate the text of ``.auto_review.yaml`` (None: no such file) into a RepoConfig.

    Keys: ``enabled`` (bool), ``ignored_paths`` and ``skip_paths`` (lists of glob
    strings), ``guidelines`` (string, cut to 8 KiB). Anything else (unknown or duplicate
    keys, wrong types, not a mapping, YAML errors, and what plain YAML refuses:
    anchors, aliases, merge keys, tags, deep nesting; see ``plainyaml``) raises
    ReviewError with EXIT_CONFIG and a one-line message naming the key and line.
    """
    if text is None:
        return RepoConfig()
    if len(text.encode()) > MAX_FILE_BYTES:
        raise _fail(f"larger than {MAX_FILE_BYTES // 1024} KiB")
    try:
        # imported only here: the gateway may run without PyYAML until it is needed
        import yaml

        from auto_review_gateway.review import plainyaml
    except ImportError:
        raise _fail("cannot be read: PyYAML is not installed") from None
    loader = plainyaml.PlainLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if not isinstance(exc, plainyaml.Refused):
            problem = f"invalid YAML: {problem}"
        raise _fail(problem, mark.line + 1 if mark else None) from None
    except yaml.YAMLError as exc:
        raise _fail(f"invalid YAML: {str(exc).splitlines()[0]}") from None
    except (ValueError, OverflowError) as exc:  # a scalar that resolves to a bad date
        raise _fail(f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()
    if data is None:
        return RepoConfig()  # an empty file
    if not isinstance(data, dict):
        raise _fail(f"must be a mapping of settings, not {_type_name(data)}", 1)
    lines: dict[str, int] = {}
    for key_node, _ in node.value:
        key = str(key_node.value)
        line = key_node.start_mark.line + 1
        if key in lines:
            raise _fail(f"duplicate key {key!r}", line)
        lines[key] = line
    config = RepoConfig()
    for key, value in data.items():
        line = lines.get(str(key))
        if key not in KEYS:
            raise _fail(f"unknown key {key!r} (known keys: {', '.join(KEYS)})", line)
        if key == "enabled":
            if not isinstance(value, bool):
                raise _fail(f"enabled must be true or false, not {_type_name(value)}", line)
            config.enabled = value
        elif key in ("ignored_paths", "skip_paths"):
            if not isinstance(value, list):
                raise _fail(f"{key} must be a list of globs, not {_type_name(value)}", line)
            for item in value:
                if not isinstance(item, str) or not item:
                    raise _fail(
                        f"{key} entries must be non-empty strings, not {_type_name(item)}", line
                    )
            setattr(config, key, list(value))
        else:
            if not isinstance(value, str):
                raise _fail(f"guidelines must be a string, not {_type_name(value)}", line)
            config.guidelines = _cap(value, MAX_GUIDELINES_BYTES)
    return config
