"""The LLM boundary: one chat-completion call through litellm, with typed errors.

Retries live in the caller (the reply task, with backoff and a budget recorded in the database),
so litellm and the OpenAI client underneath are told not to retry on their own.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from zapreply.net.http import per_shard_limit, shared, ssl_context
from zapreply.settings import apply_litellm_environment, get_settings

apply_litellm_environment()

# The environment above must be set first.
import litellm  # noqa: E402
from litellm.llms.custom_httpx.http_handler import HTTPHandler  # noqa: E402
from litellm.secret_managers.main import get_secret_bool  # noqa: E402

litellm.suppress_debug_info = True
litellm.telemetry = False
# litellm logs two INFO lines for every call ("LiteLLM completion() model= …", "Wrapper:
# Completed Call …"): noise in a worker's log at LOG_LEVEL=INFO, and CPU on every call. Its
# warnings and errors still come through; LOG_LEVEL=DEBUG brings the rest back.
if get_settings().log_level.upper() != "DEBUG":
    for _name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
        logging.getLogger(_name).setLevel(logging.WARNING)


class LLMError(Exception):
    def __init__(self, message: str, *, permanent: bool, retry_after: float | None = None):
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str


@dataclass
class Completion:
    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost: float | None = None
    latency_ms: int = 0
    model: str = ""

    def as_message(self) -> dict[str, Any]:
        """The assistant message to append to the conversation sent back to the model."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content or None}
        if self.tool_calls:
            message["tool_calls"] = [
                {"id": c.id, "type": "function",
                 "function": {"name": c.name, "arguments": c.arguments}}
                for c in self.tool_calls
            ]
        return message


_PERMANENT = (
    litellm.exceptions.AuthenticationError,
    litellm.exceptions.PermissionDeniedError,
    litellm.exceptions.NotFoundError,
    litellm.exceptions.ContextWindowExceededError,
    litellm.exceptions.ContentPolicyViolationError,
    litellm.exceptions.UnsupportedParamsError,
)


def complete(
    *,
    model: str,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    timeout: float,
    temperature: float | None = None,
    max_tokens: int | None = None,
    api_base: str | None = None,
) -> Completion:
    kwargs = _arguments(model, messages, tools, timeout, temperature, max_tokens, api_base)
    client = _http_handler_for(model)
    if client is not None:
        kwargs["client"] = client
    started = time.perf_counter()
    with _mapped_errors():
        response = litellm.completion(**kwargs)
    return _completion_of(model, response, started)


def stream(
    *,
    model: str,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    timeout: float,
    on_text: Callable[[str], None],
    temperature: float | None = None,
    max_tokens: int | None = None,
) -> Completion:
    """`complete`, with the answer's text handed to `on_text` piece by piece as the provider
    sends it (`stream=True`); the tool calls and usage come whole in the Completion, put
    together from the chunks by litellm."""
    kwargs = _arguments(model, messages, tools, timeout, temperature, max_tokens, None)
    kwargs["stream"] = True
    kwargs["stream_options"] = {"include_usage": True}
    started = time.perf_counter()
    chunks = []
    with _mapped_errors():
        for chunk in litellm.completion(**kwargs):
            chunks.append(chunk)
            choices = getattr(chunk, "choices", None) or []
            text = getattr(getattr(choices[0], "delta", None), "content", None) \
                if choices else None
            if text:
                on_text(text)
        response = litellm.stream_chunk_builder(chunks, messages=messages)
    if response is None:
        raise LLMError(f"{model} sent an empty stream", permanent=False)
    return _completion_of(model, response, started)


def _arguments(model: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None,
               timeout: float, temperature: float | None, max_tokens: int | None,
               api_base: str | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "timeout": timeout,
        "num_retries": 0,
        "max_retries": 0,
    }
    if tools:
        kwargs["tools"] = tools
    if temperature is not None:
        kwargs["temperature"] = temperature
    if max_tokens is not None:
        kwargs["max_tokens"] = max_tokens
    if api_base:
        kwargs["api_base"] = api_base
    return kwargs


@contextmanager
def _mapped_errors() -> Iterator[None]:
    """litellm's exceptions as LLMError, permanent or not."""
    try:
        yield
    except LLMError:
        raise
    except _PERMANENT as exc:
        raise LLMError(_describe(exc), permanent=True) from exc
    except litellm.exceptions.BadRequestError as exc:
        raise LLMError(_describe(exc), permanent=True) from exc
    except litellm.exceptions.RateLimitError as exc:
        raise LLMError(_describe(exc), permanent=False, retry_after=_retry_after(exc)) from exc
    except Exception as exc:  # noqa: BLE001 - timeouts, 5xx, connection errors: all retryable
        raise LLMError(_describe(exc), permanent=False) from exc


def _completion_of(model: str, response: Any, started: float) -> Completion:
    latency_ms = int((time.perf_counter() - started) * 1000)
    choice = response.choices[0]
    message = choice.message
    calls = [
        ToolCall(id=c.id, name=c.function.name or "", arguments=c.function.arguments or "{}")
        for c in (message.tool_calls or [])
    ]
    usage = getattr(response, "usage", None)
    return Completion(
        content=message.content or "",
        tool_calls=calls,
        prompt_tokens=getattr(usage, "prompt_tokens", None),
        completion_tokens=getattr(usage, "completion_tokens", None),
        cost=_cost(model, response),
        latency_ms=latency_ms,
        model=getattr(response, "model", None) or model,
    )


_through_http_handler: dict[str, bool] = {}


def _http_handler_for(model: str) -> HTTPHandler | None:
    """The HTTP client for a model whose calls go through litellm's own HTTP handler (OpenAI
    and OpenAI-compatible chat, zapreply.settings.apply_litellm_environment), or None to leave
    the choice to litellm.

    litellm's own client is httpx's default: at most 100 connections a process, 20 of them kept
    open. A worker holds one call per slot in flight, so beyond 100 slots calls queue for a
    connection, and beyond 20 every call that finds no idle connection opens one (a TCP and TLS
    handshake each) and drops it after the answer. These hold a connection for every slot,
    split over zapreply.net.http's shards.
    Other routes take an SDK client of their own in `client=`, so they keep litellm's."""
    routed = _through_http_handler.get(model)
    if routed is None:
        try:
            provider = litellm.get_llm_provider(model=model)[1]
        except Exception:  # noqa: BLE001 - an unknown provider fails in the call itself
            provider = None
        routed = _through_http_handler[model] = (
            provider == "openai"
            and bool(get_secret_bool("EXPERIMENTAL_OPENAI_BASE_LLM_HTTP_HANDLER"))
        )
    if not routed:
        return None
    return _shared_handler()


def _shared_handler() -> HTTPHandler:
    """The calling thread's handler (zapreply.net.http: a few per process, each thread on one)."""
    return shared("llm", _make_handler)


def _make_handler() -> HTTPHandler:
    per_shard = per_shard_limit(get_settings().worker_concurrency)
    return HTTPHandler(client=httpx.Client(
        limits=httpx.Limits(max_connections=per_shard, max_keepalive_connections=per_shard),
        timeout=httpx.Timeout(600.0, connect=5.0),  # each call passes its own timeout
        follow_redirects=True,
        verify=ssl_context(),
    ))


_unpriced: set[str] = set()


def _cost(model: str, response: Any) -> float | None:
    """USD when litellm knows the model's price. A model it does not know raises on every call
    (~0.7 ms): remember it and stop asking."""
    if model in _unpriced:
        return None
    # litellm prices every response it returns already: take that figure when it has one.
    hidden = getattr(response, "_hidden_params", None)
    priced = hidden.get("response_cost") if isinstance(hidden, dict) \
        else getattr(hidden, "response_cost", None)
    if isinstance(priced, int | float) and priced > 0:
        return float(priced)
    try:
        return litellm.completion_cost(completion_response=response) or None
    except Exception:  # noqa: BLE001 - unknown models have no price
        _unpriced.add(model)
        return None


def warm_up() -> None:
    """Pay litellm's lazy imports (~1.5 s of CPU on the first call) before the first customer
    does: a mocked completion with tools, no network."""
    from zapreply.llm.tools import SCHEMAS

    litellm.completion(model="openai/warm-up", messages=[{"role": "user", "content": "hi"}],
                       tools=SCHEMAS, mock_response="ok")


def _describe(exc: Exception) -> str:
    """A short reason for events and logs: the class and status, never request headers."""
    status = getattr(exc, "status_code", None)
    text = _provider_message(str(exc)).splitlines()[0][:300] if str(exc) else ""
    label = type(exc).__name__ + (f" ({status})" if status else "")
    return f"{label}: {text}" if text else label


def _provider_message(text: str) -> str:
    """litellm's HTTP handler quotes the provider's error body whole (`OpenAIException -
    {"error": {"message": ...}}`) where the OpenAI SDK gave only its message: keep the message."""
    start = text.find("{")
    if start < 0:
        return text
    try:
        body, end = json.JSONDecoder().raw_decode(text, start)
    except ValueError:
        return text
    error = body.get("error", body) if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else error
    if not isinstance(message, str) or not message.strip():
        return text
    return text[:start] + message.strip() + text[end:]


def _retry_after(exc: Exception) -> float | None:
    """The provider's Retry-After, in seconds. litellm's mapped errors carry the provider's
    headers in `litellm_response_headers` (their `response` is a stand-in without headers);
    the OpenAI client's own errors (transcription) carry them on `response`."""
    for headers in (getattr(exc, "litellm_response_headers", None),
                    getattr(getattr(exc, "response", None), "headers", None)):
        value = next((v for k, v in (headers or {}).items()
                      if isinstance(k, str) and k.lower() == "retry-after"), None)
        try:
            return float(value)
        except (TypeError, ValueError):
            continue
    return None


# --- media -----------------------------------------------------------------------------------


@dataclass
class Transcript:
    text: str
    model: str
    latency_ms: int = 0
    seconds: float | None = None
    cost: float | None = None


def transcribe(
    *, model: str, audio: bytes, file_name: str, mimetype: str | None, timeout: float,
    language: str | None = None,
) -> Transcript:
    """Speech to text (OpenAI's /audio/transcriptions or the provider's equivalent). The
    provider tells the format by the file name's extension."""
    kwargs: dict[str, Any] = {
        "model": model,
        "file": (file_name, audio, mimetype or "application/octet-stream"),
        "timeout": timeout,
        "max_retries": 0,
    }
    if language:
        kwargs["language"] = language
    started = time.perf_counter()
    try:
        response = litellm.transcription(**kwargs)
    except Exception as exc:  # noqa: BLE001 - classified below
        raise LLMError(_describe(exc), permanent=_is_permanent(exc),
                       retry_after=_retry_after(exc)) from exc
    latency_ms = int((time.perf_counter() - started) * 1000)
    duration = getattr(response, "duration", None)
    cost = None
    if model not in _unpriced:
        try:
            cost = litellm.completion_cost(completion_response=response, model=model,
                                           call_type="transcription") or None
        except Exception:  # noqa: BLE001 - unknown models have no price
            _unpriced.add(model)
    return Transcript(
        text=str(getattr(response, "text", "") or ""), model=model, latency_ms=latency_ms,
        seconds=float(duration) if isinstance(duration, int | float) else None, cost=cost,
    )


def _is_permanent(exc: Exception) -> bool:
    """The transcription path raises the OpenAI client's errors unmapped: go by the status.
    A request the provider refuses (4xx, but for timeouts, conflicts and rate limits) fails the
    same way again."""
    if isinstance(exc, (*_PERMANENT, litellm.exceptions.BadRequestError)):
        return True
    status = getattr(exc, "status_code", None)
    return isinstance(status, int) and 400 <= status < 500 and status not in (408, 409, 429)


_vision: dict[str, bool] = {}


def supports_vision(model: str) -> bool:
    """Whether litellm's model map says the model takes images (False for models it does not
    know: the config's `vision: always` is for those)."""
    if model not in _vision:
        try:
            _vision[model] = bool(litellm.supports_vision(model=model))
        except Exception:  # noqa: BLE001 - an unknown provider prefix
            _vision[model] = False
    return _vision[model]


def embed(model: str, texts: list[str], *, timeout: float) -> list[list[float]]:
    """One vector per text, in order, from any litellm embedding model (same provider keys as
    the chat model)."""
    if not texts:
        return []
    try:
        response = litellm.embedding(model=model, input=texts, timeout=timeout,
                                     num_retries=0, max_retries=0)
    except Exception as exc:  # noqa: BLE001 - mapped by status, as transcription's
        raise LLMError(_describe(exc), permanent=_is_permanent(exc)) from exc
    items = sorted(response.data, key=lambda item: _field(item, "index"))
    vectors = [[float(v) for v in _field(item, "embedding")] for item in items]
    if len(vectors) != len(texts):
        raise LLMError(f"{model} gave {len(vectors)} embeddings for {len(texts)} texts",
                       permanent=False)
    return vectors


def _field(item: Any, name: str) -> Any:
    return item[name] if isinstance(item, dict) else getattr(item, name)
