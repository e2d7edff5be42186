"""Plain YAML: the part of YAML a settings file needs, read so that it cannot explode.

PyYAML's SafeLoader composes the whole document before anyone can look at it, and
recursively: merge keys that double at each level (``<<: [*a, *a]``) cost 2^n in
``flatten_mapping`` (a 1.5 KB file took 64 s and 1.5 GB at 26 levels), and a document
nested a thousand levels deep ends in a RecursionError. :class:`PlainLoader` refuses,
as each node's first event arrives and before the node is composed, anchors (``&a``),
aliases (``*a``), explicit tags (``!!int``) and nesting deeper than MAX_DEPTH; merge
keys (``<<``) are refused before any mapping is flattened. Without aliases a document
composes in time linear in its size. PyYAML's scanner and parser are iterative, so a
deep document costs nothing before its first node past MAX_DEPTH is refused.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.events import AliasEvent, Event, NodeEvent
from yaml.nodes import MappingNode, Node

MAX_DEPTH = 16  # a settings file needs 3 (mapping > list > string)
_STANDARD_TAGS = "tag:yaml.org,2002:"  # what "!!" stands for
_MERGE = _STANDARD_TAGS + "merge"


class Refused(yaml.MarkedYAMLError):
    """Valid YAML that a settings file may not use; ``problem`` says what, ``problem_mark``
    where."""


def _refusal(event: Event, depth: int) -> str | None:
    """Why the node that ``event`` starts, ``depth`` levels down, is refused (None: it is not)."""
    if isinstance(event, AliasEvent):
        return f"aliases (*{event.anchor}) are not allowed"
    if isinstance(event, NodeEvent) and event.anchor is not None:
        return f"anchors (&{event.anchor}) are not allowed"
    tag = getattr(event, "tag", None)
    if tag is not None:
        return f"tags ({tag.replace(_STANDARD_TAGS, '!!', 1)}) are not allowed"
    if depth >= MAX_DEPTH:
        return f"nested deeper than {MAX_DEPTH} levels"
    return None


class PlainLoader(yaml.SafeLoader):
    """SafeLoader without anchors, aliases, merge keys or explicit tags, and with a depth
    limit (see the module doc). Use as ``PlainLoader(text)``, then ``get_single_node``."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        """Refuse what the next node starts with before composing it (see the module doc)."""
        event = self.peek_event()
        problem = _refusal(event, self._depth)
        if problem:
            raise Refused(problem=problem, problem_mark=event.start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def flatten_mapping(self, node: MappingNode) -> None:
        """Refuse merge keys (``<<``) instead of flattening them."""
        for key_node, _ in node.value:
            if key_node.tag == _MERGE:
                raise Refused(
                    problem="merge keys (<<) are not allowed", problem_mark=key_node.start_mark
                )
        super().flatten_mapping(node)
