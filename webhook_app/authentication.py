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
from dataclasses import dataclass

from webhook_app import routing
from zapreply.channel import wuzapi

# Compared against when an instance has no secret, so a miss costs what a hit costs.
_NO_SECRET = b"-" * 32


@dataclass(frozen=True)
class Trust:
    """An authentic webhook: `instance` is the one instance it may act for, or None when it
    may act for whichever instance it names (the global key, or unsigned webhooks allowed)."""

    instance: str | None


def by_secret_path(instance: str, secret: str) -> Trust | None:
    """Posted to /webhooks/wuzapi/<instance>/<secret>."""
    known = routing.instances([instance])
    secrets = known[0].webhook_secrets if known else ()
    given = secret.encode("utf-8", "replace")
    matched = False
    for expected in secrets or (None,):
        # Every secret is compared, the first match or not, and one for an unknown instance.
        candidate = expected.encode() if expected else _NO_SECRET
        matched |= hmac.compare_digest(candidate, given) and expected is not None
    return Trust(instance) if matched else None


def by_instance_key(candidates: list[str], body: bytes, signature: str) -> Trust | None:
    """Signed with the HMAC key of a config on one of the instances the webhook names."""
    for info in routing.instances(candidates):
        if any(wuzapi.verify_signature(key, body, signature) for key in info.hmac_keys):
            return Trust(info.name)
    return None


def names_match(url_instance: str, envelope: wuzapi.Envelope) -> bool:
    """The URL's instance is one the body names too, when it names one (older WuzAPI builds
    send only the user's token, which the URL then names the instance for)."""
    named = [name for name in (envelope.instance_name, envelope.user_id) if name]
    return not named or url_instance in named
