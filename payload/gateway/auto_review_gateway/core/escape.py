"""Text a repository controls (paths, messages, rule names), shown so it cannot forge output.

A file may be named ``fake.py:1: critical: fine [none]\\nreal.txt``, or carry ESC
sequences that move a terminal's cursor, or Markdown that renders as a link or an image.
:func:`visible` is for a terminal or a log line: every control character (C0, DEL, C1)
and every bidirectional or line-separator format character becomes a backslash escape
(``\\n``, ``\\x1b``, ``\\u202e``), and a backslash is doubled, so the escaped text maps back
to exactly one original. :func:`md_code` and :func:`md_text` are for Markdown (the
``markdown`` format and what is posted to a forge): a code span that nothing can close
early, and prose in which nothing is markup.
"""

from __future__ import annotations

import re

_SHORT = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
# C0 and DEL and C1, the bidirectional controls (Trojan Source), LS and PS, BOM, and
# the backslash itself.
_UNSAFE = re.compile("[\\\\\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ufeff]")
# What is markup inside a line of Markdown (CommonMark and GitHub's): emphasis, code,
# links and images, HTML and entities, table cells, strikethrough, mentions and issue
# references, math. What marks up only at a line's start (#, -, +, 1.) is left alone:
# md_text's output always follows other text on its line.
_MD_INLINE = re.compile(r"([\\`*_\[\]()!<>&|~@#$])")
_BACKTICKS = re.compile("`+")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    short = _SHORT.get(char)
    if short is not None:
        return short
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str) -> str:
    """``text`` with control and direction-changing characters as backslash escapes and
    ``\\`` as ``\\\\``: one line, nothing a terminal acts on, unambiguous."""
    return _UNSAFE.sub(_escape, text)


def md_code(text: str, *, in_table: bool = False) -> str:
    """``text`` as one Markdown code span, shown as :func:`visible` shows it: delimited by
    one backtick more than its longest run of them, and padded with a space on each side
    where CommonMark would otherwise take a backtick for the delimiter or strip a space
    of the text. ``in_table``: ``|`` escaped as ``\\|``, which a GFM table cell needs
    even inside a code span."""
    shown = visible(text)
    longest = max((len(run) for run in _BACKTICKS.findall(shown)), default=0)
    fence = "`" * (longest + 1)
    spaced = shown[:1] == shown[-1:] == " " and shown.strip(" ")
    pad = " " if not shown or "`" in (shown[:1], shown[-1:]) or spaced else ""
    span = f"{fence}{pad}{shown}{pad}{fence}"
    return span.replace("|", "\\|") if in_table else span


def md_text(text: str) -> str:
    """``text`` as literal Markdown prose within a line (never at its start): runs of white
    space become one space, other control characters escapes (:func:`visible`), and
    every character that marks up inside a line is backslash-escaped, so nothing in it is
    a link, an image, emphasis, HTML, an entity or a table cell's end."""
    return _MD_INLINE.sub(r"\\\1", visible(" ".join(text.split())))
