"""Local HTTP servers standing in for the outside world, speaking its real wire format:
an OpenAI-compatible chat-completions endpoint (reached by litellm) and WuzAPI/LivChat's send
endpoints (reached by httpx).

They run in the test process on ephemeral loopback ports; a worker subprocess reaches them over
real HTTP. Their behaviour is scripted by what the conversation contains, so a test can steer
a worker it does not share memory with (failures are set on the stub itself):

- a customer message containing ``#handoff`` makes the model call ``handoff_to_human``, then
  say it is passing the customer on;
- ``#tool`` makes it call ``send_whatsapp`` and then finish without text;
- ``#call <name> {json}`` makes it call the business tool ``<name>`` with those arguments, then
  answer ``"Resultado: " + <the tool's result>`` (or an apology when the result is an error);
otherwise the model answers ``"Resposta: " + <the customer messages of this turn>``.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


class _Server:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"null")
                except ValueError:
                    body = None
                status, payload = outer.handle(self.path, dict(self.headers), body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> _Server:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def record(self, entry: dict[str, Any]) -> None:
        with self.changed:
            # When it arrived (time.monotonic() of the test process): fault tests measure
            # recovery times against it.
            entry.setdefault("at", time.monotonic())
            self.requests.append(entry)
            self.changed.notify_all()

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()

    def wait_for(self, predicate, timeout: float = 20.0) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
        """Block until predicate(requests) is true; return a copy of the requests."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while not predicate(self.requests):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out; requests so far: {self.requests!r}")
                self.changed.wait(remaining)
            return list(self.requests)

    def handle(self, path: str, headers: dict[str, str], body: Any) -> tuple[int, Any]:
        raise NotImplementedError


class LLMStub(_Server):
    def __init__(self) -> None:
        super().__init__()
        self.fail_status: int | None = None
        self.delay_seconds = 0.0
        # Timing of every chat-completions call: {"start", "end", "status", "turn"} (monotonic
        # seconds), and how many were in progress at once at most, so a test can tell whether
        # two calls overlapped.
        self.calls: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0

    def reset(self) -> None:
        super().reset()
        with self.lock:
            self.calls.clear()
            self.in_flight = 0
            self.max_in_flight = 0

    def handle(self, path: str, headers: dict[str, str], body: Any) -> tuple[int, Any]:
        if not path.endswith("/chat/completions") or not isinstance(body, dict):
            return self._handle(path, headers, body)
        call: dict[str, Any] = {"start": time.monotonic(), "end": None, "status": None,
                                "turn": _current_turn(body.get("messages") or [])}
        with self.lock:
            self.calls.append(call)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        status = None
        try:
            status, payload = self._handle(path, headers, body)
            return status, payload
        finally:
            with self.lock:
                call["end"] = time.monotonic()
                call["status"] = status
                self.in_flight -= 1

    def _handle(self, path: str, headers: dict[str, str], body: Any) -> tuple[int, Any]:
        self.record({"path": path, "body": body, "headers": headers})
        if not path.endswith("/chat/completions") or not isinstance(body, dict):
            return 404, {"error": {"message": "not found"}}
        if self.delay_seconds:
            time.sleep(self.delay_seconds)
        messages = body.get("messages") or []
        turn = _current_turn(messages)
        if self.fail_status:
            return self.fail_status, {"error": {"message": "stub failure", "type": "server_error"}}
        last = messages[-1] if messages else {}
        business_call = _BUSINESS_CALL.search(turn)
        if business_call and last.get("role") == "tool":
            result = last.get("content") or ""
            if result.startswith("error:"):
                return 200, _completion(body, content="Não consegui consultar agora, desculpe.")
            return 200, _completion(body, content=f"Resultado: {result}")
        if business_call:
            # The arguments as typed, valid JSON or not.
            arguments = business_call.group(2) or "{}"
            return 200, _completion(body, tool_call=(business_call.group(1), arguments))
        if last.get("role") == "tool":
            if "#handoff" in turn:
                return 200, _completion(body, content="Vou te passar para um atendente.")
            return 200, _completion(body, content="")
        if "#handoff" in turn:
            return 200, _completion(body, tool_call=("handoff_to_human", {"reason": "pediu humano"}))
        if "#tool" in turn:
            return 200, _completion(body, tool_call=("send_whatsapp", {"message": "Via ferramenta"}))
        return 200, _completion(body, content=f"Resposta: {turn}")


_BUSINESS_CALL = re.compile(r"#call (\S+) ?(.*)")


def _current_turn(messages: list[dict[str, Any]]) -> str:
    """The customer messages after the last assistant answer (tool calls do not end a turn),
    joined by ' | '."""
    turn: list[str] = []
    for message in messages:
        if message.get("role") == "assistant" and not message.get("tool_calls"):
            turn = []
        elif message.get("role") == "user":
            content = message.get("content")
            turn.append(content if isinstance(content, str) else json.dumps(content))
    return " | ".join(turn)


def _completion(body: dict[str, Any], *, content: str | None = None,
                tool_call: tuple[str, dict[str, Any] | str] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    finish = "stop"
    if tool_call is not None:
        name, arguments = tool_call
        message["content"] = None
        message["tool_calls"] = [{
            "id": f"call_{uuid.uuid4().hex[:12]}",
            "type": "function",
            "function": {"name": name, "arguments": arguments if isinstance(arguments, str)
                         else json.dumps(arguments)},
        }]
        finish = "tool_calls"
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "stub"),
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49},
    }


class MessagesStub(_Server):
    """WuzAPI's /chat/send/text and LivChat's /api/v1/messages/send."""

    def __init__(self) -> None:
        super().__init__()
        # Status codes to answer before succeeding, consumed one per send.
        self.failures: list[int] = []
        self.signals: list[dict[str, Any]] = []

    def reset(self) -> None:
        super().reset()
        with self.lock:
            self.signals.clear()

    def handle(self, path: str, headers: dict[str, str], body: Any) -> tuple[int, Any]:
        entry = {"path": path, "body": body, "headers": headers}
        if path in ("/chat/presence", "/chat/markread"):
            # Typing and read receipts: kept apart from the sends the tests count.
            with self.changed:
                self.signals.append(entry)
                self.changed.notify_all()
            return 200, {"code": 200, "success": True, "data": {"Details": "ok"}}
        with self.lock:
            failure = self.failures.pop(0) if self.failures else None
        if failure is not None:
            self.record({**entry, "status": failure})
            return failure, {"code": failure, "error": "stub failure", "success": False}
        self.record({**entry, "status": 200})
        if path == "/chat/send/text":
            message_id = (body or {}).get("Id") or f"3EB0{uuid.uuid4().hex[:18].upper()}"
            return 200, {"code": 200, "success": True,
                         "data": {"Details": "Sent", "Id": message_id, "Timestamp": int(time.time())}}
        if path == "/api/v1/messages/send":
            return 200, {"success": True, "data": {"id": f"lc-{uuid.uuid4().hex[:12]}"}}
        return 404, {"code": 404, "error": "not found", "success": False}

    def sent(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.requests if r["status"] == 200]


class EndpointStub:
    """A business's own HTTP API, called by the tools a config defines: any method, any path.
    Records each request; answers from `routes` (path -> (status, body text, delay seconds)),
    else 200 with a small JSON body."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.routes: dict[str, tuple[int, str, float]] = {}
        self.changed = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                entry = {"method": self.command, "path": unquote(parts.path),
                         "raw_path": parts.path,
                         "query": parse_qs(parts.query), "headers": dict(self.headers),
                         "body": json.loads(raw) if raw else None}
                with outer.changed:
                    outer.requests.append(entry)
                    outer.changed.notify_all()
                status, text, delay = outer.routes.get(
                    entry["path"], (200, json.dumps({"status": "enviado"}), 0.0))
                if delay:
                    time.sleep(delay)
                data = text.encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the caller gave up waiting

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve  # noqa: N815

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> EndpointStub:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
