"""A loopback stand-in for a hosted OpenAI-compatible API, which tests cannot reach.

It speaks the real ``POST /v1/chat/completions`` wire format: the request is a JSON
``{"model", "messages", ...}`` body, the answer a ``chat.completion`` object whose
``choices[0].message.content`` is the text a test scripted. Each test queues the answers
it wants (:meth:`FakeOpenAI.script`) and then inspects what arrived
(:attr:`FakeOpenAI.requests`, including the Authorization header).

Scripted items:

* a ``str``: a normal completion with that text as the assistant's content;
* :class:`Reply`: any status and JSON body (e.g. a 500 or a 401 error object);
* :class:`Stall`: wait that many seconds before answering (for client timeouts).

* :class:`Truncated`: a completion cut off at the token limit (``finish_reason: "length"``);
* :func:`rate_limited`: a 429 ``rate_limit_exceeded`` with ``retry-after``.

With nothing queued the server answers 500, so a test that makes one request too many
fails loudly. ``ssl_context`` serves HTTPS instead of HTTP.

``GET /v1/models`` ("List models") lists :attr:`FakeOpenAI.models`; with ``api_key``
every request without ``Authorization: Bearer <api_key>`` is 401 ``invalid_api_key``.

It refuses what the real API refuses (OpenAI API reference, "Create chat completion",
and the errors it documents), before consuming a scripted answer:

* ``messages`` must be a list of ``{"role", "content"}`` with a known role;
* reasoning models (o1, o3, o4-mini, gpt-5 ...; "Reasoning models" guide: only the
  default temperature) and models named in :meth:`FakeOpenAI.refuse_temperature` answer
  400 ``unsupported_value`` (``param: temperature``) to a temperature other than 1, and
  400 ``unsupported_parameter`` (``param: max_tokens``) to ``max_tokens``, which the
  reference marks deprecated in favour of ``max_completion_tokens``;
* a ``response_format`` ``json_schema`` with ``strict: true`` must follow the
  Structured Outputs rules: every object lists all its properties in ``required`` and
  sets ``additionalProperties: false`` (400 otherwise).

Every JSON body sent back is kept in :attr:`FakeOpenAI.answers`.

Typical use::

    with FakeOpenAI() as api:
        api.script('{"findings": [], "summary": "ok"}')
        ...  # point LLM_BASE_URL at api.base_url
        assert api.requests[0].json["model"] == "gpt-4o-mini"
"""

from __future__ import annotations

import collections
import json
import re
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from loopback import LoopbackServer

MAX_BODY = 16 * 1024 * 1024
ROLES = ("system", "developer", "user", "assistant", "tool")
REASONING = re.compile(r"(?:\A|/)(?:o[1-9][0-9]*|gpt-5)(?:\Z|[-._:])", re.IGNORECASE)


@dataclass(frozen=True)
class Reply:
    """A scripted raw answer: ``status``, a JSON body (None: empty body), extra headers."""

    status: int
    body: Any = None
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Stall:
    """Wait ``seconds`` before answering (interrupted when the server stops), then
    answer with ``then`` (a str or Reply)."""

    seconds: float
    then: Any = '{"findings": [], "summary": "late"}'


@dataclass(frozen=True)
class Truncated:
    """A completion cut off at the token limit: ``finish_reason`` is ``length``."""

    content: str


def rate_limited(retry_after: str) -> Reply:
    """A 429 as the API sends it when a rate limit is hit, with ``retry-after``."""
    body = error_body(
        "Rate limit reached for requests. Please try again later.",
        "requests",
        "rate_limit_exceeded",
    )
    return Reply(429, body, (("retry-after", retry_after),))


@dataclass
class Received:
    """One request as the server saw it."""

    method: str
    path: str
    headers: dict[str, str]  # header names lower-cased
    json: Any  # the parsed body (None when it was not JSON)
    raw: bytes = field(repr=False, default=b"")


def completion(
    content: str, model: str, created: int | None = None, finish_reason: str = "stop"
) -> dict[str, Any]:
    """A ``chat.completion`` object as OpenAI returns it, with ``content`` as the answer."""
    return {
        "id": "chatcmpl-fake0001",
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": 100,
            "completion_tokens": max(1, len(content) // 4),
            "total_tokens": 100 + max(1, len(content) // 4),
        },
        "system_fingerprint": "fp_fake",
    }


def error_body(
    message: str, kind: str = "server_error", code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """An OpenAI error object: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _strict_problem(schema: Any, where: str = "()") -> str | None:
    """Why a strict json_schema breaks the Structured Outputs rules (None if it does not)."""
    if not isinstance(schema, dict):
        return None
    if schema.get("type") == "object":
        props = schema.get("properties", {})
        if schema.get("additionalProperties") is not False:
            return (
                f"In context={where}, 'additionalProperties' is required to be supplied"
                " and to be false."
            )
        if sorted(schema.get("required", [])) != sorted(props):
            return (
                f"In context={where}, 'required' is required to be supplied and to be an"
                " array including every key in properties."
            )
        for name, sub in props.items():
            problem = _strict_problem(sub, f"{where[:-1]}'properties', '{name}')")
            if problem:
                return problem
    if schema.get("type") == "array":
        return _strict_problem(schema.get("items"), f"{where[:-1]}'items')")
    return None


def refusal(model: str, doc: dict[str, Any], refuse_temperature: bool) -> dict[str, Any] | None:
    """The 400 error the real API gives this request body, or None (module doc)."""
    messages = doc.get("messages")
    if not isinstance(messages, list) or not all(
        isinstance(m, dict) and m.get("role") in ROLES and "content" in m for m in messages
    ):
        return error_body("Invalid 'messages'.", "invalid_request_error", None, "messages")
    temperature = doc.get("temperature", 1)
    if refuse_temperature and temperature != 1:
        return error_body(
            f"Unsupported value: 'temperature' does not support {temperature} with this model."
            " Only the default (1) value is supported.",
            "invalid_request_error",
            "unsupported_value",
            "temperature",
        )
    if REASONING.search(model) and "max_tokens" in doc:
        return error_body(
            "Unsupported parameter: 'max_tokens' is not supported with this model."
            " Use 'max_completion_tokens' instead.",
            "invalid_request_error",
            "unsupported_parameter",
            "max_tokens",
        )
    fmt = doc.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema") or {}
        if spec.get("strict") is True:
            problem = _strict_problem(spec.get("schema"))
            if problem:
                return error_body(
                    f"Invalid schema for response_format '{spec.get('name')}': {problem}",
                    "invalid_request_error",
                    "invalid_value",
                    "response_format",
                )
    return None


class FakeOpenAI(LoopbackServer):
    """The server; use as a context manager (or call :meth:`start` / :meth:`stop`)."""

    def __init__(
        self,
        ssl_context: ssl.SSLContext | None = None,
        *,
        models: tuple[str, ...] = ("fake-model",),
        api_key: str | None = None,
    ) -> None:
        self.models = models  # what GET /v1/models lists
        self.api_key = api_key  # when set, every request must carry it as a Bearer token
        self.requests: list[Received] = []
        self.answers: list[Any] = []
        self._refuse_temperature: set[str] = set()
        self._answers: collections.deque[Any] = collections.deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        super().__init__(ssl_context)

    # ------------------------------------------------------------------ lifecycle

    def handler(self) -> type[BaseHTTPRequestHandler]:
        return _make_handler(self)

    def stop(self) -> None:
        """Stop serving, wake stalled handlers, and close the socket."""
        self._stopping.set()
        super().stop()

    # ------------------------------------------------------------------ test API

    @property
    def base_url(self) -> str:
        """``http(s)://127.0.0.1:<port>/v1``, what LLM_BASE_URL should be."""
        return f"{self.scheme}://127.0.0.1:{self.port}/v1"

    @property
    def url(self) -> str:
        """Alias of :attr:`base_url`."""
        return self.base_url

    def refuse_temperature(self, model: str) -> None:
        """Refuse a temperature other than 1 for ``model`` too (as for reasoning models)."""
        with self._lock:
            self._refuse_temperature.add(model)

    def _refuses_temperature(self, model: str) -> bool:
        with self._lock:
            return bool(REASONING.search(model)) or model in self._refuse_temperature

    def script(self, *answers: Any) -> None:
        """Queue answers for the next requests, in order."""
        with self._lock:
            self._answers.extend(answers)

    @property
    def pending(self) -> int:
        """Scripted answers not yet consumed."""
        with self._lock:
            return len(self._answers)

    def _next(self) -> Any:
        with self._lock:
            return self._answers.popleft() if self._answers else None

    def _record(self, received: Received) -> None:
        with self._lock:
            self.requests.append(received)


def _make_handler(fake: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    """The request handler class bound to ``fake``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "fake-openai/1"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: pytest shows failures, not access logs

        def _send(self, status: int, body: Any, headers: tuple[tuple[str, str], ...] = ()) -> None:
            data = b"" if body is None else json.dumps(body).encode("utf-8")
            with fake._lock:
                fake.answers.append(body)
            try:
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                pass  # the client gave up (e.g. its timeout fired during a Stall)

        def _key_refused(self) -> bool:
            """401 ``invalid_api_key`` (the API's answer to a wrong key) unless the request
            carries :attr:`FakeOpenAI.api_key`; True when refused."""
            if fake.api_key is None or self.headers.get("Authorization") == (
                f"Bearer {fake.api_key}"
            ):
                return False
            self._send(
                401,
                error_body(
                    "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
                ),
            )
            return True

        def do_GET(self) -> None:
            if self._key_refused():
                return
            if self.path.rstrip("/") == "/v1/models":
                data = [
                    {"id": m, "object": "model", "created": 0, "owned_by": "fake"}
                    for m in fake.models
                ]
                self._send(200, {"object": "list", "data": data})
            else:
                self._send(404, error_body(f"Unknown path {self.path}", "invalid_request_error"))

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._send(413, error_body("request too large", "invalid_request_error"))
                return
            raw = self.rfile.read(length)
            try:
                doc = json.loads(raw)
            except ValueError:
                doc = None
            fake._record(
                Received(
                    method="POST",
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    json=doc,
                    raw=raw,
                )
            )
            if self._key_refused():
                return
            if self.path != "/v1/chat/completions":
                self._send(404, error_body(f"Unknown path {self.path}", "invalid_request_error"))
                return
            if not isinstance(doc, dict) or not isinstance(doc.get("messages"), list):
                # what the real API says to a body without messages
                self._send(
                    400,
                    error_body(
                        "We could not parse the JSON body of your request.",
                        "invalid_request_error",
                    ),
                )
                return
            model = str(doc.get("model", ""))
            refused = refusal(model, doc, fake._refuses_temperature(model))
            if refused is not None:
                self._send(400, refused)
                return
            answer = fake._next()
            if isinstance(answer, Stall):
                fake._stopping.wait(answer.seconds)
                answer = answer.then
            if answer is None:
                self._send(500, error_body("fake: no scripted answer left"))
            elif isinstance(answer, Reply):
                self._send(answer.status, answer.body, answer.headers)
            elif isinstance(answer, Truncated):
                self._send(200, completion(answer.content, model, finish_reason="length"))
            else:
                self._send(200, completion(str(answer), str(doc.get("model", ""))))

    return Handler
