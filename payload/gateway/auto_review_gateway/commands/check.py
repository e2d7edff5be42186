"""``check``: run the sandbox self-test and print it as a table or as JSON."""

import argparse
import json
from collections.abc import Callable, Iterable

NAME = "check"
HELP = "verify that this process runs inside the expected sandbox; exit 0 only if all holds"


class Item:
    """The result of one self-test item: its name, whether it holds, and what was seen."""

    __slots__ = ("detail", "name", "ok")

    def __init__(self, name: str, ok: bool, detail: str) -> None:
        self.name = name
        self.ok = ok
        self.detail = detail

    def as_dict(self) -> dict[str, object]:
        """The item as a JSON-ready mapping."""
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``check``."""
    parser.add_argument("--json", action="store_true", help='print {"ok": ..., "items": [...]}')


def run(args: argparse.Namespace) -> int:
    """Run every self-test item, print the results, return 0 if all hold, else 1."""
    # Imported here, not at the top: ssl and subprocess cost about 20 ms of
    # start-up that the other commands (probe above all) should not pay.
    from auto_review_gateway.selftest import items as selftest

    items = evaluate(selftest.ITEMS)
    ok = all(item.ok for item in items)
    if args.json:
        print(json.dumps({"ok": ok, "items": [item.as_dict() for item in items]}, indent=2))
    else:
        print(format_table(items))
    return 0 if ok else 1


def evaluate(probes: Iterable[tuple[str, Callable[[], tuple[bool, str]]]]) -> list[Item]:
    """Run each named probe; a probe that raises fails its item instead of the whole check."""
    items = []
    for name, probe in probes:
        try:
            ok, detail = probe()
        except Exception as exc:
            ok, detail = False, f"error: {exc!r}"
        items.append(Item(name, ok, " ".join(detail.split())))
    return items


def format_table(items: list[Item]) -> str:
    """One ``ok``/``FAIL`` line per item, then a summary line."""
    width = max(len(item.name) for item in items)
    lines = [
        f"{'ok' if item.ok else 'FAIL':<4} {item.name:<{width}} {item.detail}" for item in items
    ]
    failed = [item.name for item in items if not item.ok]
    if failed:
        lines.append(f"FAILED: {len(failed)} of {len(items)} items: {', '.join(failed)}")
    else:
        lines.append(f"all {len(items)} items hold")
    return "\n".join(lines)
