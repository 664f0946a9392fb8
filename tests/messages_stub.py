"""A local stand-in for the Anthropic Messages API that real Claude Code CLI runs talk to in tests.

``POST /v1/messages`` answers with the next scripted turn of the conversation (streaming SSE when the
request asks for it, one JSON message otherwise). The turn is chosen by the number of assistant messages
the request already carries, so a retried request gets the same answer again. Every request is recorded
(method, path, parsed JSON body) so a test can say what the CLI asked for. Anything else the CLI calls is
answered minimally: ``count_tokens`` with a count, every other path with an empty 404 at once, so the
CLI never waits on it.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True, slots=True)
class Usage:
    """The token usage one turn reports (the numbers of the recorded fixture)."""

    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int
    cache_creation_input_tokens: int

    def as_json(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "output_tokens": self.output_tokens,
            "service_tier": "standard",
        }


@dataclass(frozen=True, slots=True)
class Turn:
    """One assistant message: its content blocks (``text`` / ``tool_use``), stop reason and usage."""

    content: tuple[dict[str, Any], ...]
    stop_reason: str
    usage: Usage


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def tool_use(name: str, tool_input: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:24]}", "name": name, "input": tool_input}


REPORT_TEXT = (
    "# QA summary\n\nThe marker command printed `hookdb-real-client`.\n\n"
    "- checks run: 12\n- checks passed: 11\n\nQA score: 91\n"
)


def bash_write_done(project: str) -> tuple[Turn, ...]:
    """The fixture's script: a Bash tool use, a Write of ``reports/summary.md``, then "done"."""
    return (
        Turn(
            (
                text("I'll run the marker command first."),
                tool_use("Bash", {"command": "echo hookdb-real-client", "description": "Print the marker"}),
            ),
            "tool_use",
            Usage(2140, 96, 0, 11872),
        ),
        Turn(
            (tool_use("Write", {"file_path": f"{project}/reports/summary.md", "content": REPORT_TEXT}),),
            "tool_use",
            Usage(214, 143, 11872, 180),
        ),
        Turn((text("done"),), "end_turn", Usage(96, 12, 12052, 240)),
    )


def total_usage(turns: tuple[Turn, ...]) -> Usage:
    """What the CLI should report for a whole run of ``turns``."""
    return Usage(*(sum(getattr(t.usage, f) for t in turns) for f in Usage.__slots__))


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    body: Any


@dataclass(slots=True)
class Script:
    """The conversation and what has been asked so far (shared with the server's threads)."""

    turns: tuple[Turn, ...]
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, request: Request) -> None:
        with self.lock:
            self.requests.append(request)

    def turn_for(self, body: dict[str, Any]) -> tuple[int, Turn]:
        """The turn answering a conversation that already holds this many assistant messages."""
        done = sum(1 for m in body.get("messages", ()) if m.get("role") == "assistant")
        index = min(done, len(self.turns) - 1)
        return index, self.turns[index]


def sse_events(turn: Turn, message_id: str, model: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """The Messages API's stream for one assistant message."""
    usage = turn.usage.as_json()
    yield (
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {**usage, "output_tokens": 1},
            },
        },
    )
    for index, block in enumerate(turn.content):
        if block["type"] == "text":
            start = {"type": "text", "text": ""}
            delta = {"type": "text_delta", "text": block["text"]}
        else:
            start = {**block, "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        yield "content_block_start", {"type": "content_block_start", "index": index, "content_block": start}
        yield "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        yield "content_block_stop", {"type": "content_block_stop", "index": index}
    yield (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": turn.stop_reason, "stop_sequence": None},
            "usage": usage,
        },
    )
    yield "message_stop", {"type": "message_stop"}


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the script's request list is the log."""

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return raw.decode("utf-8", "replace")

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.server.script.record(Request("GET", self.path, None))
        self._send(404, {"type": "error", "error": {"type": "not_found_error", "message": "stub"}})

    def do_HEAD(self) -> None:
        self.server.script.record(Request("HEAD", self.path, None))
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        body = self._body()
        path = self.path.split("?", 1)[0]
        self.server.script.record(Request("POST", self.path, body))
        if path == "/v1/messages/count_tokens":
            self._send(200, {"input_tokens": 100})
        elif path == "/v1/messages" and isinstance(body, dict):
            self._messages(body)
        else:
            self._send(404, {"type": "error", "error": {"type": "not_found_error", "message": "stub"}})

    def _messages(self, body: dict[str, Any]) -> None:
        index, turn = self.server.script.turn_for(body)
        message_id = f"msg_stub{index}{uuid.uuid4().hex[:16]}"
        model = body.get("model", "claude-sonnet-4-5")
        request_id = {"request-id": f"req_stub{index}{uuid.uuid4().hex[:12]}"}
        if not body.get("stream"):
            message = {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": list(turn.content),
                "stop_reason": turn.stop_reason,
                "stop_sequence": None,
                "usage": turn.usage.as_json(),
            }
            self._send(200, message, request_id)
            return
        stream = b"".join(
            f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
            for name, data in sse_events(turn, message_id, model)
        )
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Content-Length", str(len(stream)))
        self.send_header("request-id", request_id["request-id"])
        self.end_headers()
        self.wfile.write(stream)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, script: Script) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script = script


class MessagesStub:
    """The stand-in, serving ``turns`` on 127.0.0.1 from a thread; ``base_url`` is the ANTHROPIC_BASE_URL."""

    def __init__(self, turns: tuple[Turn, ...]) -> None:
        self.script = Script(turns)
        self._server = _Server(self.script)
        self._thread = threading.Thread(target=self._server.serve_forever, name="messages-stub", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def requests(self) -> list[Request]:
        with self.script.lock:
            return list(self.script.requests)

    def __enter__(self) -> MessagesStub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
