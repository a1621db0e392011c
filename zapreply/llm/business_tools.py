"""Tools a business defines per config (option `tools`): HTTP endpoints of its own that the model
may call alongside the built-in tools, e.g. to look up an order.

Each definition is a name, a description and a JSON-schema `parameters` object for the model, and
a `url`, `method`, `headers` and `timeout_seconds` for the call. The model's arguments are checked
against `parameters` first (no argument beyond its `properties` unless the schema itself sets
`additionalProperties`, types, required ones present); what does not fit is not sent. GET sends
the arguments as query parameters, the other methods as a JSON body; a `{name}` in the URL's path
is filled with that argument (percent-encoded) instead. The response text, cut to
MAX_RESULT_BYTES, goes back to the model. Anything that goes wrong (a non-2xx answer, a timeout,
a refused connection, bad arguments) becomes an "error: ..." string for the model: a tool never
fails the reply.

Every call names whose conversation it serves in headers zapreply sets (IDENTITY_HEADERS), which
neither the definition's headers nor the model can change, so the endpoint can check that the
order asked about belongs to that customer. A tool's host must resolve to public addresses
unless the config lists it in `tool_private_hosts` (checked when the connection is made,
zapreply.net.egress); redirects are never followed.

Headers may hold credentials: they are masked in API views and never put into events, logs or
error strings; nor is the URL (it may carry a key in its query string).

A reply whose generation fails (the LLM is down) is generated again from the start on retry, so
the model may call the same tool again: tools that change something should be idempotent.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import jsonschema

from zapreply.net import egress
from zapreply.net.http import origin, per_shard_limit, shared_client

NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
DEFAULT_METHOD = "POST"
DEFAULT_TIMEOUT_SECONDS = 10.0
MAX_TIMEOUT_SECONDS = 30.0
MAX_TOOLS = 20
MAX_DESCRIPTION_CHARS = 1024
MAX_PARAMETERS_CHARS = 8192
MAX_HEADERS = 20
# However fast the endpoints, a model asking for call after call is stopped here.
MAX_CALLS_PER_REPLY = 20
# What the model gets back at most, and what a `tool.called` event keeps of it.
MAX_RESULT_BYTES = 8192
EVENT_RESULT_CHARS = 1000
_FIELDS = {"name", "description", "parameters", "url", "method", "headers", "timeout_seconds"}
_PLACEHOLDER = re.compile(r"\{([a-zA-Z0-9_-]+)\}")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}$")
# Set by zapreply on every call; a definition's headers may not use the prefix.
IDENTITY_PREFIX = "x-zapreply-"
IDENTITY_HEADERS = ("X-Zapreply-Instance", "X-Zapreply-Conversation-Id",
                    "X-Zapreply-Contact-Jid", "X-Zapreply-Contact-Phone")


# Validation (configs.validate calls it; a ValueError becomes InvalidConfig there).


def check(value: Any, *, reserved: set[str]) -> list[dict[str, Any]]:
    """Validate the `tools` option; return it normalised (method upper-case, defaults filled)."""
    if not isinstance(value, list):
        raise ValueError("option 'tools' must be a list of tool definitions")
    if len(value) > MAX_TOOLS:
        raise ValueError(f"option 'tools' allows at most {MAX_TOOLS} tools")
    tools: list[dict[str, Any]] = []
    names: set[str] = set()
    for index, item in enumerate(value):
        tool = _check_one(item, f"tools[{index}]", reserved)
        if tool["name"] in names:
            raise ValueError(f"tools[{index}]: the name {tool['name']!r} is used twice")
        names.add(tool["name"])
        tools.append(tool)
    return tools


def _check_one(item: Any, where: str, reserved: set[str]) -> dict[str, Any]:  # noqa: C901
    if not isinstance(item, dict):
        raise ValueError(f"{where} must be an object")
    unknown = sorted(set(item) - _FIELDS)
    if unknown:
        raise ValueError(f"{where}: unknown field(s): {', '.join(unknown)}")
    name = item.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise ValueError(f"{where}.name must be 1-64 letters, digits, '_' or '-'")
    where = f"tool {name!r}"
    if name in reserved:
        raise ValueError(f"{where}: the name is taken by a built-in tool")
    description = item.get("description")
    if not isinstance(description, str) or not description.strip():
        raise ValueError(f"{where}: 'description' must be a non-empty string (the model "
                         "reads it to decide when to call the tool)")
    if len(description) > MAX_DESCRIPTION_CHARS:
        raise ValueError(f"{where}: 'description' must be at most {MAX_DESCRIPTION_CHARS} "
                         "characters")
    parameters = item.get("parameters", {"type": "object", "properties": {}})
    if not isinstance(parameters, dict) or parameters.get("type") != "object":
        raise ValueError(f"{where}: 'parameters' must be a JSON schema with \"type\": \"object\"")
    if not isinstance(parameters.get("properties", {}), dict):
        raise ValueError(f"{where}: 'parameters.properties' must be an object")
    required = parameters.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise ValueError(f"{where}: 'parameters.required' must be a list of names")
    if len(json.dumps(parameters)) > MAX_PARAMETERS_CHARS:
        raise ValueError(f"{where}: 'parameters' is too large")
    try:
        jsonschema.validators.validator_for(parameters).check_schema(parameters)
    except jsonschema.SchemaError as exc:
        raise ValueError(f"{where}: 'parameters' is not a valid JSON schema: "
                         f"{exc.message[:200]}") from None
    url = item.get("url")
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ValueError(f"{where}: 'url' must be an http(s) URL")
    if _PLACEHOLDER.search(parts.netloc) or _PLACEHOLDER.search(parts.query):
        raise ValueError(f"{where}: '{{...}}' placeholders are allowed in the URL's path only")
    for placeholder in _PLACEHOLDER.findall(parts.path):
        if placeholder not in parameters.get("properties", {}):
            raise ValueError(f"{where}: the URL placeholder {{{placeholder}}} is not one of "
                             "the parameters' properties")
    method = item.get("method", DEFAULT_METHOD)
    if not isinstance(method, str) or method.upper() not in METHODS:
        raise ValueError(f"{where}: 'method' must be one of: {', '.join(METHODS)}")
    headers = item.get("headers", {})
    if not isinstance(headers, dict) or len(headers) > MAX_HEADERS:
        raise ValueError(f"{where}: 'headers' must be an object of at most {MAX_HEADERS} "
                         "names and values")
    for key, header_value in headers.items():
        if not _HEADER_NAME.match(key):
            raise ValueError(f"{where}: {key!r} is not a valid header name")
        if key.lower().startswith(IDENTITY_PREFIX):
            raise ValueError(f"{where}: headers starting with 'X-Zapreply-' are set by "
                             "zapreply on every call")
        if not isinstance(header_value, str) or any(c in header_value for c in "\r\n\0"):
            # The value itself is not repeated: it may be a credential.
            raise ValueError(f"{where}: the value of header {key!r} must be a single-line "
                             "string")
    timeout = item.get("timeout_seconds", DEFAULT_TIMEOUT_SECONDS)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) \
            or not 0 < timeout <= MAX_TIMEOUT_SECONDS:
        raise ValueError(f"{where}: 'timeout_seconds' must be a number above 0 and at most "
                         f"{MAX_TIMEOUT_SECONDS:g}")
    return {
        "name": name, "description": description.strip(), "parameters": parameters,
        "url": url, "method": method.upper(), "headers": dict(headers),
        "timeout_seconds": float(timeout),
    }


def masked(tools: Any, mask: str) -> Any:
    """The definitions as the API shows them: header names, never their values."""
    if not isinstance(tools, list):
        return tools
    return [
        {**tool, "headers": {key: mask for key in tool.get("headers") or {}}}
        if isinstance(tool, dict) else tool
        for tool in tools
    ]


def unmask(tools: list[dict[str, Any]], stored: Any, mask: str) -> list[dict[str, Any]]:
    """A client echoing back what GET showed keeps the stored header values (of the tool with
    the same name); a masked value with nothing stored behind it is refused."""

    previous = {t.get("name"): t.get("headers") or {} for t in stored or []
                if isinstance(t, dict)}
    previous_url = {t.get("name"): t.get("url") for t in stored or [] if isinstance(t, dict)}
    result = []
    for tool in tools:
        headers = dict(tool.get("headers") or {})
        for key, value in headers.items():
            if value == mask:
                if key not in previous.get(tool["name"], {}):
                    raise ValueError(f"tool {tool['name']!r}: header {key!r} holds the mask "
                                     "GET shows; send the real value")
                if origin(tool.get("url")) != origin(previous_url.get(tool["name"])):
                    # A stored credential goes only to the host it was given for.
                    raise ValueError(f"tool {tool['name']!r}: give header {key!r} again when "
                                     "changing the host of its url")
                headers[key] = previous[tool["name"]][key]
        result.append({**tool, "headers": headers})
    return result


# Calling.


def time_budget(settings: Any) -> float:
    """Seconds the media work and business-tool calls of one reply may take together: half of
    what the task time limit leaves after the longest possible series of LLM calls, so a slow
    endpoint cannot get the task killed mid-reply. Enforced in code: Celery's threads pool
    ignores task time limits."""
    spare = settings.task_time_limit_seconds - settings.llm_timeout_seconds * (
        settings.max_tool_rounds + 1)
    return max(spare / 2, 0.0)


@dataclass(frozen=True)
class Identity:
    """Whose conversation a reply serves, as every tool call tells the business."""

    instance: str
    conversation_id: int
    contact_jid: str
    contact_phone: str | None = None

    def headers(self) -> dict[str, str]:
        values = (self.instance, str(self.conversation_id), self.contact_jid,
                  self.contact_phone or "")
        return {name: _header_value(value) for name, value in zip(IDENTITY_HEADERS, values,
                                                                   strict=True)}


def _header_value(value: str) -> str:
    # A header value is sent as ASCII on one line; anything else is percent-encoded.
    if value.isascii() and value.isprintable():
        return value
    return quote(value, safe="")


class Toolbox:
    """The business tools of one reply, whose conversation they serve, and the time they have
    left. `private_hosts`: the config's `tool_private_hosts`."""

    def __init__(self, definitions: Any, *, budget_seconds: float,
                 identity: Identity | None = None, private_hosts: Any = None) -> None:
        self.tools = {t["name"]: _defaults(t) for t in definitions or []
                      if isinstance(t, dict) and isinstance(t.get("name"), str)}
        self.deadline = time.monotonic() + budget_seconds
        self.calls = 0
        self.identity = identity
        self.private_hosts = frozenset(
            h.strip().rstrip(".").lower()
            for h in (private_hosts if isinstance(private_hosts, list) else [])
            if isinstance(h, str) and h.strip())

    def __contains__(self, name: str) -> bool:
        return name in self.tools

    @property
    def schemas(self) -> list[dict[str, Any]]:
        return [
            {"type": "function", "function": {
                "name": t["name"], "description": t["description"],
                "parameters": t["parameters"]}}
            for t in self.tools.values()
        ]

    def call(self, name: str, arguments: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Call the endpoint; return the text for the model and what the event records
        (status, duration). Never raises."""
        tool = self.tools[name]
        details: dict[str, Any] = {"method": tool["method"], "status": None, "duration_ms": 0,
                                   "ok": False}
        self.calls += 1
        if self.calls > MAX_CALLS_PER_REPLY:
            return (f"error: no more than {MAX_CALLS_PER_REPLY} tool calls per reply; answer "
                    "with what you have", details)
        problem = _argument_problem(tool, arguments)
        if problem is not None:
            details["refused"] = "arguments"
            return f"error: {problem}; nothing was sent to {name}", details
        remaining = self.deadline - time.monotonic()
        if remaining < 1:
            return (f"error: no time left to call {name} in this reply; answer without it",
                    details)
        # A real deadline (zapreply.net.egress), not httpx's per-read timeout: the call ends by
        # then.
        timeout = min(tool["timeout_seconds"], remaining)
        headers = {"User-Agent": "zapreply",
                   **{k: v for k, v in tool["headers"].items()
                      if not k.lower().startswith(IDENTITY_PREFIX)},
                   **(self.identity.headers() if self.identity else {})}
        started = time.monotonic()
        try:
            result, status = _request(tool, arguments, headers, timeout,
                                      _http(self.private_hosts))
        except _BadArguments as exc:
            result, status = f"error: {exc}", None
        except egress.AddressRefused:
            details["refused"] = "private_address"
            result, status = (f"error: {name} is not reachable: its host resolves to a private "
                              "or local address this config does not allow"), None
        except httpx.TimeoutException:
            result, status = f"error: {name} did not answer within {round(timeout, 1):g} s", None
        except httpx.ConnectError:
            result, status = f"error: could not connect to {name}", None
        except Exception as exc:  # noqa: BLE001 - a tool must never fail the reply
            # The class only: an exception's text may quote the URL.
            result, status = f"error: calling {name} failed ({type(exc).__name__})", None
        details.update(status=status, duration_ms=int((time.monotonic() - started) * 1000),
                       ok=status is not None and 200 <= status < 300)
        return result, details


class DryRun(Toolbox):
    """The business tools offered to the model as they are, but never called (the console's
    playground, tools switched to dry run): arguments are checked, and a call gets a canned
    result instead of the endpoint's answer."""

    def call(self, name: str, arguments: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        problem = _argument_problem(self.tools[name], arguments)
        if problem is not None:
            return (f"error: {problem}; nothing was sent to {name}",
                    {"dry_run": True, "refused": "arguments"})
        return (f"dry run: {name} was not called. Assume it succeeded and answer as you would "
                "with its result.", {"dry_run": True})


def _defaults(tool: dict[str, Any]) -> dict[str, Any]:
    """A stored definition made whole: rows written before validation normalised them."""
    return {
        **tool,
        "description": tool.get("description") or tool["name"],
        "parameters": tool.get("parameters") or {"type": "object", "properties": {}},
        "method": str(tool.get("method") or DEFAULT_METHOD).upper(),
        "headers": tool.get("headers") or {},
        "timeout_seconds": min(float(tool.get("timeout_seconds") or DEFAULT_TIMEOUT_SECONDS),
                               MAX_TIMEOUT_SECONDS),
    }


class _BadArguments(ValueError):
    pass


def _argument_problem(tool: dict[str, Any], arguments: dict[str, Any]) -> str | None:
    """What is wrong with the model's arguments for `tool`'s parameters schema, or None."""
    schema = tool["parameters"]
    if "additionalProperties" not in schema:
        schema = {**schema, "additionalProperties": False}
    try:
        validator = jsonschema.validators.validator_for(schema)(schema)
        error = jsonschema.exceptions.best_match(validator.iter_errors(arguments))
    except Exception:  # noqa: BLE001 - a schema stored before it was checked
        return f"the parameters schema of {tool['name']} cannot be used"
    if error is None:
        return None
    instance = error.instance if isinstance(error.instance, dict) else {}
    if error.validator == "required" and not error.absolute_path:
        missing = [key for key in error.validator_value if key not in instance]
        return f"missing argument {missing[0]!r}" if missing else "missing argument"
    if error.validator == "additionalProperties" and not error.absolute_path:
        known = schema.get("properties") or {}
        extra = sorted(key for key in instance if key not in known)
        allowed = ", ".join(known) or "none"
        return f"unexpected argument(s) {', '.join(map(repr, extra))} (allowed: {allowed})"
    where = "/".join(str(part) for part in error.absolute_path)
    return f"invalid argument {where!r}: {error.message[:200]}" if where \
        else f"invalid arguments: {error.message[:200]}"


def _request(tool: dict[str, Any], arguments: dict[str, Any], headers: dict[str, str],
             timeout: float, client: httpx.Client) -> tuple[str, int]:
    url: str | httpx.URL
    url, rest = _fill_url(tool["url"], arguments)
    kwargs: dict[str, Any] = {"headers": headers, "timeout": timeout}
    if tool["method"] == "GET":
        # Merged: `params=` would drop a query string the configured URL already has.
        url = httpx.URL(url).copy_merge_params(_query(rest))
    else:
        kwargs["json"] = rest
    _quiet.calling = True
    try:
        with egress.deadline(time.monotonic() + timeout), \
                client.stream(tool["method"], url, **kwargs) as response:
            body = bytearray()
            for chunk in response.iter_bytes():
                body.extend(chunk)
                if len(body) > MAX_RESULT_BYTES:
                    break
            status = response.status_code
    finally:
        _quiet.calling = False
    text = bytes(body[:MAX_RESULT_BYTES]).decode("utf-8", errors="ignore")
    if len(body) > MAX_RESULT_BYTES:
        text += " …[truncated]"
    if not 200 <= status < 300:
        detail = f": {text[:500]}" if text.strip() else ""
        return f"error: {tool['name']} answered HTTP {status}{detail}", status
    return text or "ok (empty response)", status


def _fill_url(template: str, arguments: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    rest = dict(arguments)
    scheme, _, after = template.partition("://")
    host, slash, path_and_query = after.partition("/")

    def fill(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in arguments or arguments[key] is None:
            raise _BadArguments(f"missing argument {key!r}")
        value = arguments[key]
        text = value if isinstance(value, str) else json.dumps(value)
        if text in ("", ".", ".."):
            raise _BadArguments(f"argument {key!r} is not a valid path segment")
        rest.pop(key, None)
        return quote(text, safe="")

    return f"{scheme}://{host}{slash}{_PLACEHOLDER.sub(fill, path_and_query)}", rest


def _query(arguments: dict[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for key, value in arguments.items():
        if value is None:
            continue
        if isinstance(value, bool):
            params[key] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            params[key] = value
        elif isinstance(value, list) and all(isinstance(v, str | int | float) and
                                             not isinstance(v, bool) for v in value):
            params[key] = value
        else:
            params[key] = json.dumps(value)
    return params


def _http(private_hosts: frozenset[str]) -> httpx.Client:
    # A client (and so a connection pool) per list of private hosts: a connection opened for
    # a config that lists a host is never reused for one that does not.
    return shared_client(f"business-tools:{','.join(sorted(private_hosts))}",
                         lambda: egress.client(lambda host, _port: host in private_hosts,
                                               httpx.Limits(
                                                   max_connections=per_shard_limit(100),
                                                   max_keepalive_connections=per_shard_limit(20))))


class _QuietWhileCalling(logging.Filter):
    """httpx logs every request line with its URL at INFO; a tool's URL may carry a key, and
    its query string the customer's data. Dropped for the calling thread only."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_quiet, "calling", False)


_quiet = threading.local()
logging.getLogger("httpx").addFilter(_QuietWhileCalling())
