"""Reading a POST body: the JSON object, and each field a review needs, checked.

Every check raises :class:`BadRequest` with a message that names the field, never its
value, so the message is safe to send back as a 400.
"""

from __future__ import annotations

import json
from typing import Any

from auto_review_gateway.core import httpjson, names
from auto_review_gateway.core.model import ReviewError


class BadRequest(Exception):
    """A request whose content is unusable; the message is safe to send back."""


def parse_json(text: bytes) -> dict[str, Any]:
    """The JSON object in ``text``; BadRequest otherwise."""
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        raise BadRequest("malformed JSON") from None
    if not isinstance(doc, dict):
        raise BadRequest("the body must be a JSON object")
    return doc


def want_obj(doc: Any, key: str, where: str) -> dict[str, Any]:
    """``doc[key]`` if it is an object; BadRequest naming ``where.key`` otherwise."""
    value = doc.get(key) if isinstance(doc, dict) else None
    if not isinstance(value, dict):
        raise BadRequest(f"{where}.{key} is missing or not an object")
    return value


def want_name(value: Any, what: str) -> str:
    """``value`` if it is an owner or repository name (names.is_name); else BadRequest."""
    if not names.is_name(value):
        raise BadRequest(f"{what} is not a valid name")
    return value


def want_number(value: Any, what: str) -> int:
    """``value`` if it is a positive integer (not a bool); else BadRequest."""
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value < 2**53:
        raise BadRequest(f"{what} must be a positive integer")
    return value


def want_sha(value: Any, what: str) -> str:
    """``value`` lower-cased if it is a full hex commit SHA; else BadRequest."""
    if not names.is_sha(value):
        raise BadRequest(f"{what} must be a full hex commit SHA (40 or 64 digits)")
    return value.lower()


def want_ref(value: Any, what: str) -> str:
    """``value`` if it is a printable git ref of at most 255 characters; else BadRequest."""
    if not isinstance(value, str) or not value or len(value) > 255 or not value.isprintable():
        raise BadRequest(f"{what} is not a valid ref")
    return value


def want_clone_url(value: Any, what: str) -> str:
    """``value`` if it is an http(s) URL without credentials; else BadRequest."""
    if not isinstance(value, str) or len(value) > 2048:
        raise BadRequest(f"{what} is not a valid URL")
    try:
        httpjson.check_url(value, what=what, exit_code=0)
    except ReviewError:
        raise BadRequest(f"{what} must be an http(s) URL without credentials") from None
    return value


def want_owner(repository: dict[str, Any], keys: tuple[str, ...] = ("login",)) -> str:
    """The name in ``repository.owner``: the first of ``keys`` with a value; else BadRequest."""
    owner = want_obj(repository, "owner", "repository")
    login = next((owner[key] for key in keys if owner.get(key)), None)
    return want_name(login, "repository.owner.login")


def want_repository(
    doc: dict[str, Any], owner_keys: tuple[str, ...] = ("login",)
) -> tuple[str, str, dict[str, Any]]:
    """``(owner, name, repository)`` of a webhook's ``repository``; else BadRequest."""
    repository = want_obj(doc, "repository", "payload")
    owner = want_owner(repository, owner_keys)
    return owner, want_name(repository.get("name"), "repository.name"), repository
