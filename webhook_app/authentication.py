"""Which webhooks are authentic, and for which instance.

A webhook is acted on only when one of these holds:
- it is signed (`x-hmac-signature`, hex HMAC-SHA256 of the raw body) with the global
  WUZAPI_HMAC_KEY, which WuzAPI's global webhook uses: trusted for any instance;
- it is signed with the `hmac_key` of a config on the instance it names: trusted for that
  instance only, so one tenant's key never signs for another's;
- it is posted to a config's secret path, /webhooks/wuzapi/<instance>/<webhook_secret>:
  trusted for that instance only;
- WEBHOOK_ALLOW_UNSIGNED is set (local experiments).

Everything else gets the same 401 whether or not the instance exists, so names can't be
probed; secrets are compared in constant time. A signature covers the body, not the URL
(WuzAPI signs no URL or timestamp): a body replayed to another instance's URL is refused
because the URL's instance must be the body's.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass

from webhook_app import routing
from zapreply.channel import wuzapi
from zapreply.settings import Settings

UNAUTHENTICATED = ("unauthenticated webhook: sign it (x-hmac-signature) with the instance's "
                   "HMAC key, or post it to the config's webhook_path")
WRONG_INSTANCE = ("the instance in the URL is not the one the body names "
                  "(instanceName/userID)")

# Compared against when an instance has no secret, so a miss costs what a hit costs.
_NO_SECRET = b"-" * 32


@dataclass(frozen=True)
class Trusted:
    """An authentic webhook: `instance` is the one instance it may act for, or None when it
    may act for whichever instance it names (the global key, or unsigned webhooks allowed)."""

    instance: str | None


@dataclass(frozen=True)
class Refused:
    """Not to be acted on: 401, saying `reason`."""

    reason: str


def authenticate(settings: Settings, routes: routing.Routes, body: bytes,
                 signature: str | None, envelope: Callable[[], wuzapi.Envelope], *,
                 url_instance: str | None = None, secret: str | None = None) -> Trusted | Refused:
    """Whether a webhook is authentic, and for which instance (the instances' secrets and
    keys as `routes` knows them).

    `envelope` parses the body (raising wuzapi.BadPayload); it is called only when the answer
    depends on what the body names, so a body neither signed nor posted to a secret path is
    refused unread. An authentic body that does not parse is Trusted: its 400 is the caller's.
    A database that cannot be asked raises SQLAlchemyError (a 503: WuzAPI retries).
    """
    trust = _trust(settings, routes, body, signature, envelope, url_instance, secret)
    if trust is None:
        return Refused(UNAUTHENTICATED)
    if url_instance:
        try:
            named = envelope()
        except wuzapi.BadPayload:
            return trust
        if not names_match(url_instance, named):
            # A body signed for one instance, replayed to another instance's URL.
            return Refused(WRONG_INSTANCE)
    return trust


def _trust(settings: Settings, routes: routing.Routes, body: bytes, signature: str | None,
           envelope: Callable[[], wuzapi.Envelope], url_instance: str | None,
           secret: str | None) -> Trusted | None:
    if secret is not None:
        trust = by_secret_path(routes, url_instance or "", secret)
        if trust is not None:
            return trust
        # A wrong secret: only the instance's own key can still vouch for the body.
    elif settings.hmac_key and signature and wuzapi.verify_signature(
            settings.hmac_key, body, signature):
        return Trusted(None)
    elif settings.webhook_allow_unsigned:
        return Trusted(None)
    elif not signature:
        # Refused before the body is parsed: a stranger learns nothing of what we read.
        return None
    try:
        named = envelope()
    except wuzapi.BadPayload:
        # Not known to be authentic, so no more is said about the body than that.
        return None
    candidates = [url_instance] if url_instance else named.instance_candidates()
    # Signed, but not with the global key: one of the named instance's own keys?
    return by_instance_key(routes, candidates, body, signature or "")


def by_secret_path(routes: routing.Routes, instance: str, secret: str) -> Trusted | None:
    """Posted to /webhooks/wuzapi/<instance>/<secret>."""
    known = routes.instances([instance])
    secrets = known[0].webhook_secrets if known else ()
    given = secret.encode("utf-8", "replace")
    matched = False
    for expected in secrets or (None,):
        # Every secret is compared, the first match or not, and one for an unknown instance.
        candidate = expected.encode() if expected else _NO_SECRET
        matched |= hmac.compare_digest(candidate, given) and expected is not None
    return Trusted(instance) if matched else None


def by_instance_key(routes: routing.Routes, candidates: list[str], body: bytes,
                    signature: str) -> Trusted | None:
    """Signed with the HMAC key of a config on one of the instances the webhook names."""
    for info in routes.instances(candidates):
        if any(wuzapi.verify_signature(key, body, signature) for key in info.hmac_keys):
            return Trusted(info.name)
    return None


def names_match(url_instance: str, envelope: wuzapi.Envelope) -> bool:
    """The URL's instance is one the body names too, when it names one (older WuzAPI builds
    send only the user's token, which the URL then names the instance for)."""
    named = [name for name in (envelope.instance_name, envelope.user_id) if name]
    return not named or url_instance in named
