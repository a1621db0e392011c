"""WuzAPI's webhook wire format: decode either encoding, verify the signature, and reduce a
`Message` event to the few fields the pipeline needs.

Pure functions, no I/O: the receiver calls them on every request, so they stay cheap and never
import anything heavy.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from typing import Any


class BadPayload(ValueError):
    """The body cannot be a WuzAPI webhook; the message says what is wrong (sent as the 400)."""


@dataclass(frozen=True)
class Envelope:
    type: str
    event: dict[str, Any]
    # Instance identifiers in the order the receiver tries them.
    instance_name: str | None
    user_id: str | None
    token: str | None
    media: dict[str, Any]

    def instance_candidates(self) -> list[str]:
        return [value for value in (self.instance_name, self.user_id, self.token) if value]


@dataclass(frozen=True, slots=True)
class Ignored:
    """A webhook with nothing to answer, and why (the reason is recorded and answered)."""

    reason: str
    # False: not a message at all (a receipt, presence, a connection event), nothing to record.
    is_message: bool = True
    # A group chat, read as Ignored because groups were not asked for.
    is_group: bool = False
    # What the worker records about it beyond the reason (a reaction: its emoji and target).
    details: dict[str, Any] | None = None


# The fixed reasons, built once: the receiver answers them on every such webhook.
GROUP_CHAT = Ignored("group chat", is_group=True)
BROADCAST = Ignored("status or broadcast")
NEWSLETTER = Ignored("newsletter")
DELETION = Ignored("deletion")
EDIT = Ignored("edit")
NO_CONTENT = Ignored("no content")


@dataclass(frozen=True)
class InboundMessage:
    """What the worker needs from a WhatsApp message; plain JSON for the task payload."""

    wa_message_id: str
    chat_jid: str
    sender_jid: str
    contact_phone: str | None
    push_name: str | None
    from_me: bool
    timestamp: str | None
    text: str
    media_type: str | None
    # Group chats only (read with groups=True): whom the message mentions, so the worker can
    # tell whether the group is talking to the bot.
    is_group: bool = False
    mentions: tuple[str, ...] = ()
    # The message it quotes (replies to), in any chat: its id, who wrote it, and its text as
    # the quoting message carries it (the worker prefers its own copy, when it has one).
    quoted_id: str | None = None
    quoted_sender: str | None = None
    quoted_text: str | None = None
    # Where the worker can get the media's bytes (see media_reference); None for text.
    media: dict[str, Any] | None = None
    # A one-to-one chat's other address for the same person (whatsmeow's SenderAlt, or
    # RecipientAlt for the business's own messages): the phone's JID of an @lid chat, or the
    # LID of a phone-addressed one; None when the message did not carry it.
    chat_alt_jid: str | None = None

    def as_payload(self) -> dict[str, Any]:
        # The instance's fields in declaration order (no slots, no properties): a copy of its
        # __dict__ costs a tenth of iterating dataclasses.fields on every webhook.
        payload = self.__dict__.copy()
        if not self.is_group:
            del payload["is_group"], payload["mentions"]
        else:
            payload["mentions"] = list(self.mentions)
        if self.quoted_id is None and self.quoted_text is None:
            del payload["quoted_id"], payload["quoted_sender"], payload["quoted_text"]
        if self.chat_alt_jid is None:
            del payload["chat_alt_jid"]
        return payload


@dataclass(frozen=True, slots=True)
class InboundPayload:
    """An inbound task's message as the worker reads it: the JSON of InboundMessage.as_payload,
    read once. Keys a receiver of an earlier version did not send are optional, so tasks
    already queued are still accepted."""

    wa_message_id: str
    chat_jid: str
    sender_jid: str | None = None
    contact_phone: str | None = None
    push_name: str | None = None
    from_me: bool = False
    timestamp: str | None = None
    text: str = ""
    media_type: str | None = None
    is_group: bool = False
    mentions: tuple[str, ...] = ()
    quoted_id: str | None = None
    quoted_sender: str | None = None
    quoted_text: str | None = None
    media: dict[str, Any] | None = None
    chat_alt_jid: str | None = None
    # When the receiver took it (Unix seconds, its clock), stamped beside the message.
    received_at: float | None = None

    @classmethod
    def from_task(cls, message: dict[str, Any]) -> InboundPayload:
        get = message.get
        return cls(
            wa_message_id=message["wa_message_id"], chat_jid=message["chat_jid"],
            sender_jid=get("sender_jid"), contact_phone=get("contact_phone"),
            push_name=get("push_name"), from_me=bool(get("from_me")),
            timestamp=get("timestamp"), text=get("text") or "", media_type=get("media_type"),
            is_group=bool(get("is_group")), mentions=tuple(get("mentions") or ()),
            quoted_id=get("quoted_id"), quoted_sender=get("quoted_sender"),
            quoted_text=get("quoted_text"), media=get("media") or None,
            chat_alt_jid=get("chat_alt_jid"),
            received_at=get("received_at"),
        )


def verify_signature(key: str, body: bytes, signature: str | None) -> bool:
    if not signature:
        return False
    expected = hmac.new(key.encode(), body, hashlib.sha256).hexdigest().encode()
    # Bytes, not str: compare_digest refuses non-ASCII str, and a header is whatever a client sent.
    given = signature.strip().lower().encode("utf-8", "replace")
    return hmac.compare_digest(expected, given)


_MEDIA_KEYS = ("base64", "mimeType", "fileName", "s3")


def parse_envelope(content_type: str | None, body: bytes) -> Envelope:
    """Decode a webhook body in either of WuzAPI's encodings."""
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    if mime == "application/json":
        data = _json_object(body, "body")
        instance_name, user_id, token = (
            _opt_str(data, "instanceName"),
            _opt_str(data, "userID"),
            _opt_str(data, "token"),
        )
    elif mime == "application/x-www-form-urlencoded":
        fields = _form_fields(body)
        raw = fields.get("jsonData")
        if raw is None:
            raise BadPayload("form body has no jsonData field")
        data = _json_object(raw.encode("utf-8"), "jsonData")

        def field(name: str) -> str | None:
            value = fields.get(name)
            return value.strip() or None if value is not None else None

        # Older builds put instanceName/userID inside jsonData too; the form fields win.
        instance_name = field("instanceName") or _opt_str(data, "instanceName")
        user_id = field("userID") or _opt_str(data, "userID")
        token = field("token")
    else:
        raise BadPayload(
            "unsupported Content-Type: expected application/json or "
            "application/x-www-form-urlencoded"
        )

    event_type = data.get("type")
    if not isinstance(event_type, str) or not event_type:
        raise BadPayload("missing event type ('type')")
    event = data.get("event")
    if event is None:
        event = {}
    if not isinstance(event, dict):
        raise BadPayload("'event' must be an object")
    media = {key: data[key] for key in _MEDIA_KEYS if key in data}
    return Envelope(event_type, event, instance_name, user_id, token, media)


# The fields WuzAPI sends in a form body (token instead of userID and instanceName in older
# builds). Any other field is skipped without being decoded.
_FORM_FIELDS = frozenset({"jsonData", "userID", "instanceName", "token"})
# WuzAPI sends at most four fields. parse_qs has no limit of its own: a 32 MB body of empty
# fields took it 9 s and 1.6 GB, holding a receiver worker all along.
MAX_FORM_FIELDS = 32


def _form_fields(body: bytes) -> dict[str, str]:
    """The first value of each field WuzAPI sends, decoded as parse_qs would (`+` is a space,
    percent escapes as UTF-8 with replacement), refusing a body with too many fields before
    splitting it."""
    if body.count(b"&") >= MAX_FORM_FIELDS:
        raise BadPayload(f"form body has more than {MAX_FORM_FIELDS} fields; "
                         "WuzAPI sends jsonData, userID, instanceName and token")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadPayload("form body is not valid UTF-8") from None
    fields: dict[str, str] = {}
    for pair in text.split("&"):
        name, _, value = pair.partition("=")
        if "%" in name or "+" in name:
            name = _unquote_plus(name)
        if name in _FORM_FIELDS and name not in fields:
            fields[name] = _unquote_plus(value) if "%" in value or "+" in value else value
    return fields


# A % not starting an escape stands for itself, as in unquote. Go's QueryEscape never writes
# one; a few are let through, a body made of them is refused.
_STRAY_PERCENT = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_MAX_STRAY_PERCENTS = 64


def _unquote_plus(value: str) -> str:
    """unquote(value.replace("+", " ")), in C: urllib's unquote spends Python code on every
    escape (5 s for a 24 MB body of them). Each %XX becomes a \\xXX that codecs.escape_decode
    turns into its byte, once the backslashes already there are escaped themselves."""
    value = value.replace("+", " ")
    if "%" not in value:
        return value
    data = value.encode("utf-8")
    if b"\\" in data:
        data = data.replace(b"\\", b"\\\\")
    data, strays = _STRAY_PERCENT.subn(b"%25", data, count=_MAX_STRAY_PERCENTS)
    if strays == _MAX_STRAY_PERCENTS and _STRAY_PERCENT.search(data):
        raise BadPayload(f"form body has more than {_MAX_STRAY_PERCENTS} '%' that start no "
                         "percent-escape")
    return codecs.escape_decode(data.replace(b"%", b"\\x"))[0].decode("utf-8", "replace")


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        # RecursionError: a few thousand nested brackets exhaust the decoder's stack.
        raise BadPayload(f"{what} is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadPayload(f"{what} must be a JSON object")
    return data


def _opt_str(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value.strip() or None if isinstance(value, str) else None


# Message payload keys → our media type. Anything not listed and not text is "other".
_MEDIA_MESSAGE_KEYS = {
    "imageMessage": "image",
    "audioMessage": "audio",
    "videoMessage": "video",
    "documentMessage": "document",
    "documentWithCaptionMessage": "document",
    "stickerMessage": "sticker",
    "locationMessage": "location",
    "liveLocationMessage": "location",
    "contactMessage": "contact",
    "contactsArrayMessage": "contact",
}
# Info.Edit values (whatsmeow EditAttribute) that mean the message was deleted, by its sender
# or a group admin; the others ("1" edit, "2" pin, "3" admin edit) are changes to an old message.
_DELETIONS = {"7", "8"}
# Not something a customer said: never answered.
_NON_MESSAGE_KEYS = {
    "reactionMessage": Ignored("reaction"),
    "protocolMessage": Ignored("protocol"),
    "editedMessage": EDIT,
    "pollUpdateMessage": Ignored("poll update"),
    "keepInChatMessage": Ignored("keep in chat"),
    "pinInChatMessage": Ignored("pin"),
    "encReactionMessage": Ignored("reaction"),
}


# Base64 characters of media kept in the task payload (~1.5 MB of media: a voice note of
# several minutes, any WhatsApp-compressed photo). Larger media is fetched by the worker.
DEFAULT_INLINE_MEDIA_LIMIT = 2 * 1024 * 1024
# URLs and keys longer than this are not WhatsApp's or S3's: not carried on.
_MAX_MEDIA_FIELD = 4096
# WhatsApp's JPEGThumbnail of a photo or video is a few KB; a larger one is not carried on.
MAX_THUMBNAIL_CHARS = 16 * 1024
# Column sizes of messages.wa_message_id, conversations.chat_jid / contact_name.
MAX_MESSAGE_ID_LENGTH = 128
MAX_JID_LENGTH = 200
MAX_NAME_LENGTH = 200
# E.164 numbers have at most 15 digits.
_MAX_PHONE_DIGITS = 15


def read_message(
    envelope: Envelope, *, groups: bool = False,
    inline_media_limit: int = DEFAULT_INLINE_MEDIA_LIMIT,
) -> InboundMessage | Ignored:
    """The message of a `Message` event, or why it is not one to act on.

    Group chats are read only with `groups` (a config on the instance answers groups);
    otherwise they are GROUP_CHAT. Media bytes WuzAPI sent inline (`base64`) travel on with
    the message only up to `inline_media_limit` characters; beyond that the worker fetches
    them (see media_reference).
    """
    if envelope.type != "Message":
        return Ignored(f"event type {envelope.type} is not a message", is_message=False)
    event = envelope.event
    info = event.get("Info")
    if not isinstance(info, dict):
        raise BadPayload("Message event has no Info object")
    wa_id = info.get("ID")
    chat = info.get("Chat")
    wa_id = storable(wa_id) if isinstance(wa_id, str) else ""
    chat = storable(chat) if isinstance(chat, str) else ""
    if not wa_id:
        raise BadPayload("Message event has no Info.ID")
    if not chat:
        raise BadPayload("Message event has no Info.Chat")
    # The worker stores both in bounded columns; a row that can never be written would be
    # retried forever, so refuse it here, where the sender hears about it.
    if len(wa_id) > MAX_MESSAGE_ID_LENGTH:
        raise BadPayload(f"Info.ID is longer than {MAX_MESSAGE_ID_LENGTH} characters")
    if len(chat) > MAX_JID_LENGTH:
        raise BadPayload(f"Info.Chat is longer than {MAX_JID_LENGTH} characters")

    is_group = info.get("IsGroup") is True or chat.endswith("@g.us")
    if is_group and not groups:
        return GROUP_CHAT
    if chat == "status@broadcast" or chat.endswith("@broadcast"):
        return BROADCAST
    if chat.endswith("@newsletter") or event.get("NewsletterMeta"):
        return NEWSLETTER
    edit = info.get("Edit")
    if isinstance(edit, str) and edit in _DELETIONS:
        return DELETION
    if event.get("IsEdit") is True or edit:
        return EDIT

    message = event.get("Message")
    if not isinstance(message, dict):
        message = {}
    for key, ignored in _NON_MESSAGE_KEYS.items():
        if key in message:
            if key == "reactionMessage":
                return _reaction(message[key], from_me=info.get("IsFromMe") is True) or ignored
            return ignored

    text, media_type = _content(message)
    text = storable(text)
    if not text and media_type is None:
        return NO_CONTENT
    sender = info.get("Sender") if isinstance(info.get("Sender"), str) else ""
    from_me = info.get("IsFromMe") is True
    group_fields = _group_context(message) if is_group else _quote_context(message)
    return InboundMessage(
        wa_message_id=wa_id,
        chat_jid=chat,
        sender_jid=storable(sender) or chat,
        # In a group, the phone of the member who wrote (the group itself has none).
        contact_phone=_contact_phone(info, sender if is_group else chat, from_me),
        push_name=None if from_me else _opt_storable(_opt_str(info, "PushName"), MAX_NAME_LENGTH),
        from_me=from_me,
        timestamp=_opt_storable(_opt_str(info, "Timestamp")),
        text=text,
        media_type=media_type,
        **group_fields,
        media=None if from_me or media_type is None
        else media_reference(message, envelope.media, inline_media_limit),
        chat_alt_jid=None if is_group
        else alternate_jid(chat, info.get("RecipientAlt" if from_me else "SenderAlt")),
    )


# A mention list is as long as the sender made it; the worker only looks for the bot in it.
_MAX_MENTIONS = 64


def _context_info(message: dict[str, Any]) -> dict[str, Any]:
    """The contextInfo of whichever message kind carries it (extendedTextMessage for text,
    imageMessage for a caption, ...)."""
    for body in message.values():
        if isinstance(body, dict) and isinstance(body.get("contextInfo"), dict):
            return body["contextInfo"]
    return {}


def _group_context(message: dict[str, Any]) -> dict[str, Any]:
    """Mentions and the quoted message, from the message's contextInfo. whatsmeow's current
    field names first, then the older camel case."""
    context = _context_info(message)
    mentioned = context.get("mentionedJID", context.get("mentionedJid"))
    listed = mentioned[:_MAX_MENTIONS] if isinstance(mentioned, list) else []
    mentions = tuple(jid for jid in (_bounded(value, MAX_JID_LENGTH) for value in listed) if jid)
    return {"is_group": True, "mentions": mentions, **_quoted(context)}


def _quote_context(message: dict[str, Any]) -> dict[str, Any]:
    """The quoted message of a message outside groups; nothing when it quotes none."""
    context = _context_info(message)
    if not context:
        return {}
    quoted = _quoted(context)
    return quoted if quoted["quoted_id"] or quoted["quoted_text"] else {}


# The quoted text the model sees; a whole document quoted would crowd out the conversation.
MAX_QUOTED_CHARS = 1000


def _quoted(context: dict[str, Any]) -> dict[str, Any]:
    quoted_message = context.get("quotedMessage")
    text = None
    if isinstance(quoted_message, dict):
        body, media_type = _content(quoted_message)
        body = storable(body).strip()
        if not body and media_type:
            body = f"[{media_type}]"
        text = body[:MAX_QUOTED_CHARS] or None
    return {
        "quoted_id": _bounded(context.get("stanzaID", context.get("stanzaId")),
                              MAX_MESSAGE_ID_LENGTH),
        "quoted_sender": _bounded(context.get("participant"), MAX_JID_LENGTH),
        "quoted_text": text,
    }


def _reaction(reaction: Any, *, from_me: bool) -> Ignored | None:
    """A reaction, recorded beside the message it reacts to (never answered); None when it
    names no message."""
    if not isinstance(reaction, dict):
        return None
    key = reaction.get("key")
    target = _bounded(key.get("ID", key.get("id")), MAX_MESSAGE_ID_LENGTH) \
        if isinstance(key, dict) else None
    if target is None:
        return None
    emoji = reaction.get("text")
    # An empty text takes a reaction back.
    emoji = storable(emoji)[:32] if isinstance(emoji, str) else ""
    return Ignored("reaction", details={"target_id": target, "emoji": emoji,
                                        "from_me": from_me})


def _bounded(value: Any, max_length: int) -> str | None:
    if not isinstance(value, str):
        return None
    value = storable(value).strip()
    return value if value and len(value) <= max_length else None


def storable(value: str) -> str:
    """The string without what PostgreSQL text and JSONB cannot hold (NUL, lone surrogates
    from JSON escapes), so the worker cannot choke on a message the receiver accepted."""
    if not value.isascii():
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value.replace("\x00", "") if "\x00" in value else value


def _opt_storable(value: str | None, max_length: int | None = None) -> str | None:
    if value is None:
        return None
    return storable(value)[:max_length] or None


def _content(message: dict[str, Any]) -> tuple[str, str | None]:
    if isinstance(message.get("conversation"), str) and message["conversation"]:
        return message["conversation"], None
    extended = message.get("extendedTextMessage")
    if isinstance(extended, dict) and isinstance(extended.get("text"), str):
        return extended["text"], None
    for key, media_type in _MEDIA_MESSAGE_KEYS.items():
        body = message.get(key)
        if isinstance(body, dict):
            if key == "documentWithCaptionMessage":
                inner = body.get("message")
                body = inner.get("documentMessage") if isinstance(inner, dict) else None
                if not isinstance(body, dict):
                    body = {}
            caption = body.get("caption")
            return (caption if isinstance(caption, str) else ""), media_type
    return "", None


LID_SERVER = "lid"
PHONE_SERVER = "s.whatsapp.net"


def person_jid(value: Any) -> str | None:
    """A person's JID without its device or agent (`user[.agent][:device]@server` →
    `user@server`), for the LID and phone servers only; None for anything else."""
    if not isinstance(value, str) or "@" not in value or len(value) > MAX_JID_LENGTH:
        return None
    user, server = value.strip().split("@", 1)
    user = user.split(":", 1)[0].split(".", 1)[0]
    if server not in (LID_SERVER, PHONE_SERVER) or not (user.isascii() and user.isdigit()):
        return None
    return f"{user}@{server}"


def alternate_jid(chat: str, alt: Any) -> str | None:
    """The chat's other address when `alt` is one (a LID for a phone's chat, or the reverse)."""
    mine, other = person_jid(chat), person_jid(alt)
    if mine is None or other is None or mine.split("@")[1] == other.split("@")[1]:
        return None
    return other


def _contact_phone(info: dict[str, Any], chat: str, from_me: bool) -> str | None:
    """Digits of the customer's number; under LID addressing it sits in the *Alt field."""
    candidates = [chat]
    candidates.append(info.get("RecipientAlt") if from_me else info.get("SenderAlt"))
    for jid in candidates:
        if isinstance(jid, str) and jid.endswith("@s.whatsapp.net"):
            # user[.agent][:device]@server
            user = jid.split("@", 1)[0].split(":", 1)[0].split(".", 1)[0]
            if user.isascii() and user.isdigit() and len(user) <= _MAX_PHONE_DIGITS:
                return user
    return None


# Media message fields → the body of WuzAPI's /chat/download* endpoints (whatsmeow's JSON names
# on the left; the bytes fields are base64 strings on both sides). Not the message's URL:
# whatsmeow fetches by DirectPath from WhatsApp's own hosts, and WuzAPI would fetch a URL the
# sender chose.
_DOWNLOAD_KEYS = {
    "directPath": "DirectPath",
    "mediaKey": "MediaKey",
    "mimetype": "Mimetype",
    "fileEncSHA256": "FileEncSHA256",
    "fileSHA256": "FileSHA256",
    "fileLength": "FileLength",
}


def media_reference(
    message: dict[str, Any], delivered: dict[str, Any], inline_limit: int
) -> dict[str, Any]:
    """Everything the worker may use to get a media message's bytes, bounded: the inline
    base64 (when WuzAPI delivered it and it is small enough), the S3 URL (media_delivery=s3),
    and the keys WuzAPI's download endpoints take; and WhatsApp's thumbnail, for the console.
    Plain JSON: only the thumbnail (a few KB at most) is decoded here, to check it."""
    body = _media_body(message)
    reference: dict[str, Any] = {}
    mimetype = _short(body.get("mimetype")) or _short(delivered.get("mimeType"))
    if mimetype:
        reference["mimetype"] = mimetype
    file_name = _short(body.get("fileName")) or _short(delivered.get("fileName"))
    if file_name:
        reference["file_name"] = file_name[:MAX_NAME_LENGTH]
    for source, key in (("fileLength", "size"), ("seconds", "seconds")):
        value = body.get(source)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            reference[key] = value
    if body.get("PTT") is True:
        reference["voice"] = True
    inline = delivered.get("base64")
    # Base64 is ASCII without NULs; anything else could not even be stored (JSONB refuses
    # \u0000), so it is not carried on.
    if isinstance(inline, str) and inline and inline.isascii() and "\x00" not in inline:
        if len(inline) <= inline_limit:
            reference["base64"] = inline
        else:
            reference["inline_dropped"] = len(inline)
    thumbnail = jpeg_thumbnail(body.get("JPEGThumbnail"))
    if thumbnail:
        reference["thumbnail"] = thumbnail
    s3 = delivered.get("s3")
    url = _short(s3.get("url")) if isinstance(s3, dict) else None
    if url and url.lower().startswith(("https://", "http://")):
        reference["url"] = url
    download: dict[str, Any] = {}
    for source, target in _DOWNLOAD_KEYS.items():
        value = body.get(source)
        if source == "fileLength":
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                download[target] = value
        elif _short(value):
            download[target] = _short(value)
    if download.get("DirectPath"):
        reference["download"] = download
    return reference


def jpeg_thumbnail(value: Any) -> str | None:
    """WhatsApp's preview of a photo or video (`JPEGThumbnail`, base64 in whatsmeow's JSON),
    re-encoded, when it is small and really a JPEG; else None. It is the only picture of a
    message kept once its media is answered: the console shows it as a data: URL of type
    image/jpeg, so nothing but JPEG bytes may pass (a sender chooses these bytes)."""
    if not isinstance(value, str) or not value or len(value) > MAX_THUMBNAIL_CHARS:
        return None
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    if not data.startswith(b"\xff\xd8\xff"):
        return None
    return base64.b64encode(data).decode("ascii")


def _media_body(message: dict[str, Any]) -> dict[str, Any]:
    for key in _MEDIA_MESSAGE_KEYS:
        body = message.get(key)
        if isinstance(body, dict):
            if key == "documentWithCaptionMessage":
                inner = body.get("message")
                body = inner.get("documentMessage") if isinstance(inner, dict) else None
            return body if isinstance(body, dict) else {}
    return {}


def _short(value: Any) -> str | None:
    if not isinstance(value, str) or not value or len(value) > _MAX_MEDIA_FIELD:
        return None
    return storable(value)
