"""The messages-API boundary: send one text through WuzAPI or LivChat.

Errors say whether a retry can help: timeouts, connection errors, 408, 429 and 5xx may pass;
any other 4xx means the request itself is wrong and repeating it only repeats the failure.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from zapreply.net.http import per_shard_limit, shared_client, ssl_context

log = logging.getLogger(__name__)


class SendError(Exception):
    def __init__(self, message: str, *, permanent: bool, status: int | None = None):
        super().__init__(message)
        self.permanent = permanent
        self.status = status


def _http() -> httpx.Client:
    return shared_client("messages-api", lambda: httpx.Client(
        limits=httpx.Limits(max_connections=per_shard_limit(200),
                            max_keepalive_connections=per_shard_limit(50)),
        follow_redirects=False,
        verify=ssl_context(),
    ))


def recipient(chat_jid: str, contact_phone: str | None, driver: str) -> str:
    """WuzAPI takes the full JID; LivChat wants the number. A person's @lid chat whose number
    is known is sent to the phone's JID: WuzAPI has always delivered to it, while sends to a
    LID need a whatsmeow recent enough to know LID sessions."""
    if driver == "wuzapi":
        if contact_phone and chat_jid.endswith("@lid"):
            return f"{contact_phone}@s.whatsapp.net"
        return chat_jid
    return contact_phone or chat_jid.split("@", 1)[0]


def send_text(
    send: dict[str, Any], *, to: str, text: str, message_id: str, timeout: float
) -> str | None:
    """Send `text`; return the provider's message id. `message_id` makes a repeat recognisable:
    WuzAPI uses it as the WhatsApp message id, LivChat gets it as an idempotency key."""
    driver = send.get("driver")
    base_url = str(send.get("base_url", "")).rstrip("/")
    token = str(send.get("token", ""))
    if driver == "wuzapi":
        url = f"{base_url}/chat/send/text"
        headers = {"Token": token}
        body: dict[str, Any] = {"Phone": to, "Body": text, "Id": message_id}
    elif driver == "livchat":
        url = f"{base_url}/api/v1/messages/send"
        headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": message_id}
        body = {"phone": to, "message": text}
    else:
        raise SendError(f"unknown send driver {driver!r}", permanent=True)

    try:
        response = _http().post(url, json=body, headers=headers, timeout=timeout)
    except httpx.TimeoutException as exc:
        raise SendError(f"timeout sending via {driver}", permanent=False) from exc
    except httpx.HTTPError as exc:
        raise SendError(f"{type(exc).__name__} sending via {driver}", permanent=False) from exc

    status = response.status_code
    if status >= 500 or status in (408, 425, 429):
        raise SendError(f"{driver} answered {status}", permanent=False, status=status)
    if status >= 400:
        raise SendError(
            f"{driver} answered {status}: {_error_text(response)}", permanent=True, status=status
        )
    try:
        data = response.json()
    except ValueError:
        return None
    if isinstance(data, dict) and data.get("success") is False:
        raise SendError(f"{driver} refused the message: {_error_text(response)}", permanent=True)
    return _provider_id(data) or (message_id if driver == "wuzapi" else None)


def set_typing(send: dict[str, Any], *, to: str, typing: bool, timeout: float) -> None:
    """Show or clear "typing…" in the customer's chat (WuzAPI only). Best effort: a failure
    is logged, never raised — it must not cost the reply."""
    if send.get("driver") != "wuzapi":
        return
    _best_effort(send, "/chat/presence",
                 {"Phone": to, "State": "composing" if typing else "paused"}, timeout)


def mark_read(send: dict[str, Any], *, chat: str, messages: list[tuple[str, str | None]],
              timeout: float) -> None:
    """Blue ticks on the customer's messages, given as (WhatsApp id, sender JID) pairs (WuzAPI
    only). Best effort, like set_typing.

    WuzAPI's /chat/markread takes `Id` (a list), `Chat` and `Sender`; WhatsApp needs the
    sender of a group message, so a group's messages are marked one request per member.
    """
    if send.get("driver") != "wuzapi" or not messages:
        return
    group = chat.endswith("@g.us")
    by_sender: dict[str | None, list[str]] = {}
    for message_id, sender in messages:
        by_sender.setdefault(sender if group else None, []).append(message_id)
    for sender, ids in by_sender.items():
        body: dict[str, Any] = {"Id": ids, "Chat": chat}
        if sender:
            body["Sender"] = sender
        _best_effort(send, "/chat/markread", body, timeout)


def _best_effort(send: dict[str, Any], path: str, body: dict[str, Any], timeout: float) -> None:
    url = f"{str(send.get('base_url', '')).rstrip('/')}{path}"
    try:
        response = _http().post(url, json=body, headers={"Token": str(send.get("token", ""))},
                                timeout=timeout)
        if response.status_code >= 400:
            log.info("%s answered %s", path, response.status_code)
    except httpx.HTTPError as exc:
        log.info("%s failed: %s", path, type(exc).__name__)


def _provider_id(data: Any) -> str | None:
    if not isinstance(data, dict):
        return None
    inner = data.get("data") if isinstance(data.get("data"), dict) else data
    for key in ("Id", "id", "message_id", "messageId"):
        value = inner.get(key)
        if isinstance(value, str | int) and str(value):
            return str(value)
    return None


def _error_text(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(data, dict):
        return str(data.get("error") or data.get("message") or data)[:200]
    return str(data)[:200]
