"""The published API documents the stand-ins check requests and answers against, read
from ``../shared/specs`` beside the checkout (never copied into the repository):

* Forgejo's swagger 2.0 (``forgejo/v1_json.tmpl``, the template the forge serves at
  ``/swagger.v1.json``; its ``{{...}}`` placeholders are removed before parsing);
* GitHub's OpenAPI 3.0 description (``github/api.github.com.json``), whose ``nullable``
  becomes JSON Schema's ``"null"`` type.

:func:`problem` validates a document against a schema of either with the field's
standard validator (``jsonschema``), ``$ref`` resolved inside the same document.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from pathlib import Path
from typing import Any

import jsonschema

SPECS = Path(__file__).resolve().parent.parent.parent / "shared" / "specs"


@functools.cache
def forgejo() -> dict[str, Any]:
    """Forgejo's swagger document."""
    text = (SPECS / "forgejo" / "v1_json.tmpl").read_text()
    return json.loads(re.sub(r"\{\{[^}]*\}\}", "", text))


def _nullable(node: Any) -> Any:
    """OpenAPI 3.0's ``nullable: true`` as JSON Schema (``type`` plus ``"null"``)."""
    if isinstance(node, dict):
        out = {k: _nullable(v) for k, v in node.items() if k != "nullable"}
        if node.get("nullable") is True:
            if isinstance(out.get("type"), str):
                out["type"] = [out["type"], "null"]
            elif "type" not in out:
                out = {"anyOf": [out, {"type": "null"}]}
        return out
    if isinstance(node, list):
        return [_nullable(v) for v in node]
    return node


@functools.cache
def github() -> dict[str, Any]:
    """GitHub's OpenAPI document, ``nullable`` rewritten."""
    return _nullable(json.loads((SPECS / "github" / "api.github.com.json").read_text()))


def github_operation(method: str, path: str) -> dict[str, Any]:
    """The operation object of ``method path`` (a template path, e.g.
    ``/repos/{owner}/{repo}/hooks``)."""
    return github()["paths"][path][method.lower()]


def github_request_schema(method: str, path: str) -> dict[str, Any]:
    """The JSON request body schema of an operation."""
    body = github_operation(method, path)["requestBody"]
    return body["content"]["application/json"]["schema"]


def github_answer_schema(method: str, path: str, status: int) -> dict[str, Any] | None:
    """The JSON answer schema of an operation for ``status`` (None: no body documented)."""
    answer = github_operation(method, path)["responses"][str(status)]
    if "$ref" in answer:
        answer = github()["components"]["responses"][answer["$ref"].rsplit("/", 1)[1]]
    content = answer.get("content") or {}
    return content.get("application/json", {}).get("schema")


@functools.cache
def _validator(which: str, schema_text: str) -> jsonschema.protocols.Validator:
    doc = forgejo() if which == "forgejo" else github()
    root = copy.copy(doc)  # refs resolve against the whole document
    root.update(json.loads(schema_text))
    cls = jsonschema.Draft4Validator if which == "forgejo" else jsonschema.Draft7Validator
    return cls(root)


def problem(which: str, schema: dict[str, Any], instance: Any) -> str | None:
    """Why ``instance`` breaks ``schema`` of the ``which`` document ("forgejo" or
    "github"), or None."""
    validator = _validator(which, json.dumps(schema, sort_keys=True))
    error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(body)"
    return f"{where}: {error.message[:200]}"


def forgejo_definition(name: str) -> dict[str, Any]:
    """A ``$ref`` to one of Forgejo's definitions (``CreateHookOption``, ``Hook`` ...)."""
    return {"$ref": f"#/definitions/{name}"}
