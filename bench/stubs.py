"""Stand-ins for the outside world, in their own process: an OpenAI-compatible LLM and WuzAPI.

    python -m bench.stubs --llm-port 18001 --wuzapi-port 18002 [--llm-delay 0]

- LLM: `POST /v1/chat/completions` answers a chat completion whose text is
  "Resposta: <last user message>", after `delay` seconds (asyncio.sleep: hundreds of requests
  can wait at once at no cost). It counts the requests open at once.
- WuzAPI: `POST /chat/send/text` answers like WuzAPI and records (time.monotonic(), Phone) for
  each send (CLOCK_MONOTONIC is system-wide on Linux, so the harness compares these times with
  the load generator's); `/chat/presence` (typing) and `/chat/markread` are answered and
  counted.
- Control, on the WuzAPI port: `POST /_bench/config {"llm_delay": s}`, `POST /_bench/reset`,
  `GET /_bench/stats` (counters), `GET /_bench/sends` ([time, Phone] of every send).
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from bench.minihttp import Handler, Request, Response, serve

HOST = "127.0.0.1"


@dataclass
class State:
    llm_delay: float = 0.0
    llm_requests: int = 0
    llm_in_flight: int = 0
    llm_max_in_flight: int = 0
    sends: list[tuple[float, str]] = field(default_factory=list)
    other_calls: int = 0  # /chat/presence, /chat/markread

    def reset(self) -> None:
        self.llm_requests = 0
        self.other_calls = 0
        self.llm_max_in_flight = self.llm_in_flight
        self.sends.clear()

    def stats(self) -> dict[str, Any]:
        return {
            "llm_delay": self.llm_delay,
            "llm_requests": self.llm_requests,
            "llm_in_flight": self.llm_in_flight,
            "llm_max_in_flight": self.llm_max_in_flight,
            "send_count": len(self.sends),
            "other_calls": self.other_calls,
        }


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user" and isinstance(message.get("content"), str):
            return message["content"]
    return ""


def chat_completion(body: dict[str, Any]) -> dict[str, Any]:
    text = f"Resposta: {_last_user_text(body.get('messages') or [])}"
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "bench-model"),
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49},
    }


def make_llm_handler(state: State) -> Handler:
    async def handle(request: Request) -> Response:
        if request.method != "POST" or not request.path.endswith("/chat/completions"):
            return Response(404, {"error": {"message": "not found"}})
        state.llm_requests += 1
        state.llm_in_flight += 1
        state.llm_max_in_flight = max(state.llm_max_in_flight, state.llm_in_flight)
        try:
            if state.llm_delay > 0:
                await asyncio.sleep(state.llm_delay)
            return Response(200, chat_completion(request.json()))
        finally:
            state.llm_in_flight -= 1

    return handle


def make_wuzapi_handler(state: State) -> Handler:
    async def handle(request: Request) -> Response:
        if request.path == "/chat/send/text" and request.method == "POST":
            body = request.json() or {}
            state.sends.append((time.monotonic(), str(body.get("Phone", ""))))
            message_id = body.get("Id") or f"3EB0{uuid.uuid4().hex[:18].upper()}"
            return Response(200, {"code": 200, "success": True, "data": {
                "Details": "Sent", "Id": message_id, "Timestamp": int(time.time())}})
        if request.path in ("/chat/presence", "/chat/markread") and request.method == "POST":
            # Typing indicator and read receipts: WuzAPI answers them like a send.
            state.other_calls += 1
            return Response(200, {"code": 200, "success": True, "data": {"Details": "ok"}})
        if request.path == "/_bench/config" and request.method == "POST":
            state.llm_delay = float((request.json() or {}).get("llm_delay", state.llm_delay))
            return Response(200, {"llm_delay": state.llm_delay})
        if request.path == "/_bench/reset" and request.method == "POST":
            state.reset()
            return Response(200, {"reset": True})
        if request.path == "/_bench/stats":
            return Response(200, state.stats())
        if request.path == "/_bench/sends":
            return Response(200, state.sends)
        return Response(404, {"code": 404, "error": "not found", "success": False})

    return handle


async def run(llm_port: int, wuzapi_port: int, llm_delay: float, lifetime: float) -> None:
    state = State(llm_delay=llm_delay)
    llm = await serve(make_llm_handler(state), HOST, llm_port)
    wuzapi = await serve(make_wuzapi_handler(state), HOST, wuzapi_port)
    async with llm, wuzapi:
        # Bounded even if the harness that started this process vanished without a word.
        await asyncio.sleep(lifetime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llm-port", type=int, required=True)
    parser.add_argument("--wuzapi-port", type=int, required=True)
    parser.add_argument("--llm-delay", type=float, default=0.0)
    parser.add_argument("--lifetime", type=float, default=1800.0,
                        help="exit after this many seconds whatever happens")
    args = parser.parse_args()
    asyncio.run(run(args.llm_port, args.wuzapi_port, args.llm_delay, args.lifetime))


if __name__ == "__main__":
    main()
