"""Local HTTP servers standing in for the outside world, speaking its real wire format:
an OpenAI-compatible chat-completions endpoint (reached by litellm) and WuzAPI/LivChat's send
endpoints (reached by httpx).

They run in the test process on ephemeral loopback ports; a worker subprocess reaches them over
real HTTP. Their behaviour is scripted by what the conversation contains, so a test can steer
a worker it does not share memory with (failures are set on the stub itself):

- a customer message containing ``#handoff`` makes the model call ``handoff_to_human``, then
  say it is passing the customer on;
- ``#tool`` makes it call ``send_whatsapp`` and then finish without text;
- ``#flood <n>`` makes it call ``send_whatsapp`` n times in one answer, then finish without text;
- ``#search <query>`` makes it call ``search_knowledge`` with that query, then answer
  ``"Conhecimento: " + <the tool's result>``;
- ``#call <name> {json}`` makes it call the business tool ``<name>`` with those arguments, then
  answer ``"Resultado: " + <the tool's result>`` (or an apology when the result is an error);
otherwise the model answers ``"Resposta: " + <the customer messages of this turn>`` (an image
part reads ``<image>``).

A chat-completions request with ``"stream": true`` gets the same answer as OpenAI streams it:
server-sent events, one ``chat.completion.chunk`` per word of the text in ``choices[0].delta``
(a tool call as its id and name, then its arguments in pieces), the finish reason, the usage
when ``stream_options.include_usage`` asks for it, then ``data: [DONE]``;
``LLMStub.stream_delay_seconds`` apart, so a test can watch the text arrive.

The LLM stand-in also serves OpenAI's ``/v1/embeddings`` (a bag of words hashed into
EMBEDDING_DIMENSIONS numbers: texts sharing words are similar, others orthogonal) and
``/v1/audio/transcriptions`` (multipart in, ``{"text"}``
out); the WuzAPI stand-in serves ``/chat/download*`` (the media keys in, the media as a data: URL
out) and, for GET, files standing in for an S3 bucket.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import json
import math
import re
import struct
import threading
import time
import unicodedata
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


class Streamed:
    """An answer sent as server-sent events (`data: <json>` each), `delay` seconds apart,
    ending with `data: [DONE]`."""

    def __init__(self, events: list[dict[str, Any]], delay: float) -> None:
        self.events = events
        self.delay = delay


class _Server:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        # Sent with every answer (e.g. Retry-After beside a 429).
        self.extra_headers: dict[str, str] = {}
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
                content_type = self.headers.get("Content-Type") or ""
                if content_type.startswith("multipart/form-data"):
                    body = _multipart(content_type, raw)
                else:
                    try:
                        body = json.loads(raw or b"null")
                    except ValueError:
                        body = None
                status, payload = outer.handle(self.path, dict(self.headers), body)
                if isinstance(payload, Streamed):
                    self._stream(status, payload)
                    return
                self._answer(status, json.dumps(payload).encode(), "application/json")

            def _stream(self, status: int, streamed: Streamed) -> None:
                # No Content-Length: the body ends when the connection closes.
                self.close_connection = True
                self.send_response(status)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                self.end_headers()
                try:
                    for event in [*streamed.events, "[DONE]"]:
                        data = event if isinstance(event, str) else json.dumps(event)
                        self.wfile.write(f"data: {data}\n\n".encode())
                        self.wfile.flush()
                        if streamed.delay and event != "[DONE]":
                            time.sleep(streamed.delay)
                except OSError:
                    pass  # the caller gave up reading

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                status, data, content_type = outer.handle_get(self.path, dict(self.headers))
                self._answer(status, data, content_type)

            def _answer(self, status: int, data: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                for name, value in outer.extra_headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        class Server(ThreadingHTTPServer):
            # Hundreds of workers' connections may arrive at once (socketserver's default: 5).
            request_queue_size = 512

        self.httpd = Server(("127.0.0.1", 0), Handler)
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
            self.extra_headers = {}

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

    def handle_get(self, path: str, headers: dict[str, str]) -> tuple[int, bytes, str]:
        return 404, b"not found", "text/plain"


def _multipart(content_type: str, raw: bytes) -> dict[str, Any]:
    """A multipart/form-data body as {"fields": {name: text}, "files": {name: {...}}}."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
    fields: dict[str, str] = {}
    files: dict[str, dict[str, Any]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        content = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        if filename is None:
            fields[name] = content.decode()
        else:
            files[name] = {"filename": filename, "content_type": part.get_content_type(),
                           "content": content}
    return {"fields": fields, "files": files}


class LLMStub(_Server):
    def __init__(self) -> None:
        super().__init__()
        self.fail_status: int | None = None
        self.delay_seconds = 0.0
        # Between the chunks of a streamed answer.
        self.stream_delay_seconds = 0.0
        # Timing of every chat-completions call: {"start", "end", "status", "turn"} (monotonic
        # seconds), and how many were in progress at once at most, so a test can tell whether
        # two calls overlapped.
        self.calls: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        # /audio/transcriptions: what it answers, statuses to answer first (one per call), and
        # every request ({"path", "fields", "file": {"filename", "content_type", "content"}}).
        self.transcript = "Transcrição do áudio"
        self.transcription_failures: list[int] = []
        self.transcriptions: list[dict[str, Any]] = []

    def reset(self) -> None:
        super().reset()
        with self.lock:
            self.calls.clear()
            self.in_flight = 0
            self.max_in_flight = 0
            self.transcript = "Transcrição do áudio"
            self.transcription_failures.clear()
            self.transcriptions.clear()

    def chat_requests(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.requests if r["path"].endswith("/chat/completions")]

    def handle(self, path: str, headers: dict[str, str], body: Any) -> tuple[int, Any]:
        if path.endswith("/audio/transcriptions"):
            return self._transcribe(path, body)
        if path.endswith("/embeddings"):
            return self._embed(path, body)
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
            if status == 200 and body.get("stream"):
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                return status, Streamed(_chunks(payload, include_usage),
                                        self.stream_delay_seconds)
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
        search = _SEARCH.search(turn)
        if search and last.get("role") == "tool":
            return 200, _completion(body, content=f"Conhecimento: {last.get('content') or ''}")
        if search:
            return 200, _completion(body, tool_call=("search_knowledge",
                                                     {"query": search.group(1).strip()}))
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
        if "#handoff" in turn or "#quiet-handoff" in turn:
            # "#quiet-handoff": handed over with nothing to say (an empty answer after the tool).
            return 200, _completion(body, tool_call=("handoff_to_human", {"reason": "pediu humano"}))
        if "#tool" in turn:
            return 200, _completion(body, tool_call=("send_whatsapp", {"message": "Via ferramenta"}))
        flood = _FLOOD.search(turn)
        if flood:
            answer = _completion(body, tool_call=("send_whatsapp", {"message": "Mensagem 1"}))
            [call] = answer["choices"][0]["message"]["tool_calls"]
            answer["choices"][0]["message"]["tool_calls"] = [
                {**call, "id": f"{call['id']}_{n}", "function": {
                    "name": "send_whatsapp", "arguments": json.dumps({"message": f"Mensagem {n}"})}}
                for n in range(1, int(flood.group(1)) + 1)]
            return 200, answer
        return 200, _completion(body, content=f"Resposta: {turn}")


    def _embed(self, path: str, body: Any) -> tuple[int, Any]:
        self.record({"path": path, "body": body, "headers": {}})
        if self.fail_status:
            return self.fail_status, {"error": {"message": "stub failure", "type": "server_error"}}
        texts = (body or {}).get("input")
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not texts:
            return 400, {"error": {"message": "input is required"}}
        data = []
        for index, text in enumerate(texts):
            vector = embedding(str(text))
            if body.get("encoding_format") == "base64":
                packed = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
                data.append({"object": "embedding", "index": index, "embedding": packed})
            else:
                data.append({"object": "embedding", "index": index, "embedding": vector})
        return 200, {"object": "list", "data": data, "model": body.get("model", "stub"),
                     "usage": {"prompt_tokens": 5 * len(texts), "total_tokens": 5 * len(texts)}}

    def _transcribe(self, path: str, body: Any) -> tuple[int, Any]:
        body = body if isinstance(body, dict) else {"fields": {}, "files": {}}
        with self.changed:
            failure = self.transcription_failures.pop(0) if self.transcription_failures else None
            self.transcriptions.append({"path": path, "fields": body["fields"],
                                        "file": body["files"].get("file"), "status": failure})
            self.changed.notify_all()
            transcript = self.transcript
        if failure is not None:
            return failure, {"error": {"message": "stub failure", "type": "server_error"}}
        if "file" not in body["files"] or "model" not in body["fields"]:
            return 400, {"error": {"message": "file and model are required"}}
        return 200, {"text": transcript, "language": "portuguese", "duration": 7.0}


_BUSINESS_CALL = re.compile(r"#call (\S+) ?(.*)")
_SEARCH = re.compile(r"#search (.+)")
EMBEDDING_DIMENSIONS = 64


def embedding(text: str) -> list[float]:
    """The stand-in's embedding of `text`: its words (accents and case aside, three letters or
    more) hashed into buckets, normalised to length 1."""
    plain = "".join(c for c in unicodedata.normalize("NFKD", text.lower())
                    if not unicodedata.combining(c))
    vector = [0.0] * EMBEDDING_DIMENSIONS
    for word in re.findall(r"\w{3,}", plain):
        vector[zlib.crc32(word.encode()) % EMBEDDING_DIMENSIONS] += 1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]
_FLOOD = re.compile(r"#flood (\d+)")


def _current_turn(messages: list[dict[str, Any]]) -> str:
    """The customer messages after the last assistant answer (tool calls do not end a turn),
    joined by ' | '."""
    turn: list[str] = []
    for message in messages:
        if message.get("role") == "assistant" and not message.get("tool_calls"):
            turn = []
        elif message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                # Vision input: text parts as written, each image as <image>.
                content = " ".join(part.get("text", "") if part.get("type") == "text"
                                   else "<image>" for part in content)
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


def _chunks(completion: dict[str, Any], include_usage: bool) -> list[dict[str, Any]]:
    """A completion as OpenAI streams it: `chat.completion.chunk`s whose deltas add up to it."""
    base = {"id": completion["id"], "object": "chat.completion.chunk",
            "created": completion["created"], "model": completion["model"]}
    [choice] = completion["choices"]
    message = choice["message"]

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    chunks = [chunk({"role": "assistant", "content": ""})]
    for word in re.findall(r"\s*\S+\s*", message.get("content") or ""):
        chunks.append(chunk({"content": word}))
    for index, call in enumerate(message.get("tool_calls") or []):
        arguments = call["function"]["arguments"]
        chunks.append(chunk({"tool_calls": [{
            "index": index, "id": call["id"], "type": "function",
            "function": {"name": call["function"]["name"], "arguments": ""}}]}))
        step = len(arguments) // 3 + 1
        for start in range(0, len(arguments), step):
            chunks.append(chunk({"tool_calls": [{
                "index": index, "function": {"arguments": arguments[start:start + step]}}]}))
    chunks.append(chunk({}, choice["finish_reason"]))
    if include_usage:
        chunks.append({**base, "choices": [], "usage": completion["usage"]})
    return chunks


class MessagesStub(_Server):
    """WuzAPI's /chat/send/text and LivChat's /api/v1/messages/send."""

    def __init__(self) -> None:
        super().__init__()
        # Status codes to answer before succeeding, consumed one per send.
        self.failures: list[int] = []
        self.signals: list[dict[str, Any]] = []
        # Media: (bytes, MIME type) by GET path (an S3 bucket) or by DirectPath (WuzAPI's
        # /chat/download*), and every download request.
        self.media: dict[str, tuple[bytes, str]] = {}
        self.downloads: list[dict[str, Any]] = []

    def reset(self) -> None:
        super().reset()
        with self.lock:
            self.signals.clear()
            self.media.clear()
            self.downloads.clear()

    def handle_get(self, path: str, headers: dict[str, str]) -> tuple[int, bytes, str]:
        with self.changed:
            self.downloads.append({"path": path, "method": "GET"})
            self.changed.notify_all()
            found = self.media.get(path)
        if found is None:
            return 403, b"<Error><Code>AccessDenied</Code></Error>", "application/xml"
        return 200, found[0], found[1]

    def handle(self, path: str, headers: dict[str, str], body: Any) -> tuple[int, Any]:
        entry = {"path": path, "body": body, "headers": headers}
        if path.startswith("/chat/download"):
            return self._download(entry)
        if path in ("/chat/presence", "/chat/markread"):
            # Typing and read receipts: kept apart from the sends the tests count. Checked as
            # WuzAPI's handlers check them (ChatPresence: Phone, State; MarkRead: Id, Chat).
            payload = body if isinstance(body, dict) else {}
            required = ("Phone", "State") if path == "/chat/presence" else ("Id", "Chat")
            missing = [key for key in required if not payload.get(key)]
            with self.changed:
                self.signals.append({**entry, "status": 400 if missing else 200})
                self.changed.notify_all()
            if missing:
                return 400, {"code": 400, "error": f"Missing {missing[0]} in Payload",
                             "success": False}
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

    def _download(self, entry: dict[str, Any]) -> tuple[int, Any]:
        """WuzAPI answers 500 to any failure (no session, media gone) and wraps the media as a
        data: URL in its usual envelope."""
        body = entry["body"] if isinstance(entry["body"], dict) else {}
        with self.changed:
            self.downloads.append({**entry, "method": "POST"})
            self.changed.notify_all()
            found = self.media.get(str(body.get("DirectPath")))
        if entry["headers"].get("Token") is None:
            return 401, {"code": 401, "error": "unauthorized", "success": False}
        if found is None:
            return 500, {"code": 500, "error": "Failed to download media: 404", "success": False}
        data, mimetype = found
        data_url = f"data:{mimetype};base64,{base64.b64encode(data).decode()}"
        return 200, {"code": 200, "data": {"Data": data_url, "Mimetype": mimetype},
                     "success": True}

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

        class Server(ThreadingHTTPServer):
            # Hundreds of workers' connections may arrive at once (socketserver's default: 5).
            request_queue_size = 512

        self.httpd = Server(("127.0.0.1", 0), Handler)
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
