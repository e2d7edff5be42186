"""A minimal JSON writer for the runtime config, so the warm path never imports json (and re).

It handles exactly what config.json holds: dicts with str keys, lists, str, int,
bool and None. Anything else is a programming error and raises TypeError.
"""

from __future__ import annotations

_ESCAPES = {i: f"\\u{i:04x}" for i in range(0x20)}
_ESCAPES |= {ord('"'): '\\"', ord("\\"): "\\\\", 0x7F: "\\u007f"}
_ESCAPES |= {0x2028: "\\u2028", 0x2029: "\\u2029"}


def dumps(value: object) -> str:
    """Serialize `value` as compact JSON text (non-ASCII kept as UTF-8)."""
    if isinstance(value, str):
        return '"' + value.translate(_ESCAPES) + '"'
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, dict):
        items = []
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"JSON object keys must be str, not {type(key).__name__}")
            items.append(dumps(key) + ":" + dumps(item))
        return "{" + ",".join(items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(dumps(item) for item in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
