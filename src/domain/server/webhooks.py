"""Webhooks and notification policies: which events go where, what is sent, how it is signed.

docs/operations.md "Webhooks". The rules, all pure:

* routing: an event goes to the webhooks that the most specific `[[notification_policies]]`
  entry for its (database, environment) names, when one matches and lists the event; with
  no matching policy every webhook receives it. Either way a webhook's own `events` filter
  applies too;
* the body is built once, when the event is recorded, from the event's fields: SQL only as
  the audit log's literal-redacted fingerprint, never the raw text;
* the signature is HMAC-SHA256 over `<timestamp>.<body>` (`t=<timestamp>,v1=<hex>`), so a
  receiver can refuse replays of old bodies;
* retries wait a full-jitter exponential delay, up to a cap on attempts;
* a URL must be https, and may reach a private, loopback or link-local address only
  where `allow_private_networks` says so (the send checks every resolved address again).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from domain.server.policy_matching import resolve_scoped, scope_problems
from domain.server.workflows import WILDCARD, KeyPath, ValidationProblem
from domain.shared.backoff import FullJitterBackoff

__all__ = [
    "SIGNATURE_HEADER",
    "WEBHOOK_EVENTS",
    "AttemptResult",
    "DeliveryStatus",
    "NotificationPolicy",
    "RetryPolicy",
    "Webhook",
    "WebhookEvent",
    "WebhookFormat",
    "event_matches",
    "event_pattern_problem",
    "is_private_address",
    "render_body",
    "route",
    "sign",
    "signature_header",
    "url_problem",
    "validate_notifications",
]

#: The events a webhook can receive: a request's lifecycle, named as its audit events.
WEBHOOK_EVENTS: tuple[str, ...] = (
    "request.created",
    "request.auto_approved",
    "request.break_glass",
    "step.approved",
    "request.approved",
    "request.rejected",
    "request.cancelled",
    "request.dispatched",
    "request.dispatch_timeout",
    "request.expired",
    "execution.started",
    "execution.completed",
    "execution.failed",
    "execution.lost",
)

SIGNATURE_HEADER = "X-Dbward-Signature"
_ID = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")
_ID_MAX = 64


class WebhookFormat(StrEnum):
    GENERIC = "generic"
    SLACK = "slack"


@dataclass(frozen=True)
class Webhook:
    """One `[[webhooks]]` entry. `events` empty = every event."""

    id: str
    url: str
    format: WebhookFormat = WebhookFormat.GENERIC
    secret: str | None = field(default=None, repr=False)
    events: tuple[str, ...] = ()


@dataclass(frozen=True)
class NotificationPolicy:
    """One `[[notification_policies]]` entry: where the events of a scope go."""

    webhooks: tuple[str, ...]
    database: str = WILDCARD
    environment: str = WILDCARD
    events: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return f"np:{self.database}:{self.environment}"


# --- routing -----------------------------------------------------------------------------


def event_matches(patterns: Sequence[str], event_type: str) -> bool:
    """`[]` and `"*"` match everything, `"prefix.*"` an event family, else the exact name."""
    if not patterns:
        return True
    for pattern in patterns:
        if pattern in ("*", event_type):
            return True
        if pattern.endswith(".*") and event_type.startswith(pattern[:-1]):
            return True
    return False


def event_pattern_problem(pattern: str) -> str | None:
    """Why `pattern` can never match a webhook event; None when it can."""
    if any(event_matches([pattern], event) for event in WEBHOOK_EVENTS):
        return None
    return (
        f'{pattern!r} matches no webhook event; use "*", a family such as '
        f'"execution.*", or one of: {", ".join(WEBHOOK_EVENTS)}'
    )


def route(
    webhooks: Sequence[Webhook],
    policies: Sequence[NotificationPolicy],
    event_type: str,
    database: str,
    environment: str,
) -> list[Webhook]:
    """The webhooks that receive `event_type` about a request in (database, environment)."""
    if event_type not in WEBHOOK_EVENTS:
        return []
    policy = resolve_scoped(policies, database, environment)
    if policy is None:
        chosen = list(webhooks)
    elif not event_matches(policy.events, event_type):
        return []
    else:
        chosen = [hook for hook in webhooks if hook.id in policy.webhooks]
    return [hook for hook in chosen if event_matches(hook.events, event_type)]


# --- validation --------------------------------------------------------------------------


def is_private_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Anything but a public unicast address: private, loopback, link-local, reserved…"""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return is_private_address(address.ipv4_mapped)
    return not address.is_global or address.is_multicast


def url_problem(url: str, *, allow_private_networks: bool) -> str | None:
    """Why `url` cannot be a webhook URL; None when it can.

    https always; http only with `allow_private_networks` (a receiver next to the server,
    such as a local relay). A literal private address or `localhost` needs
    `allow_private_networks`; names are resolved and checked again at each send.
    """
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
        _ = parts.port
    except ValueError as error:
        return f"not a valid URL ({error})"
    if parts.scheme not in ("https", "http") or not hostname:
        return f"{url!r} is not an http(s) URL; write https://host/path"
    if parts.username is not None or parts.password is not None:
        return 'must not carry credentials; use secret = "${...}" to sign the body instead'
    if allow_private_networks:
        return None
    if parts.scheme != "https":
        return "must use https (http is allowed only with allow_private_networks = true)"
    if hostname == "localhost" or hostname.endswith(".localhost"):
        return _private_refusal(hostname)
    try:
        address = ipaddress.ip_address(hostname)
    except ValueError:
        return None
    return _private_refusal(hostname) if is_private_address(address) else None


def _private_refusal(host: str) -> str:
    return (
        f"{host} is a private, loopback or link-local address; set allow_private_networks = "
        "true to allow webhooks to such addresses"
    )


def validate_notifications(
    webhooks: Sequence[Webhook],
    policies: Sequence[NotificationPolicy],
    *,
    allow_private_networks: bool,
) -> list[ValidationProblem]:
    """Ids valid and unique, URLs allowed, event patterns that can match, policies naming
    existing webhooks, and each policy scope once."""
    problems: list[ValidationProblem] = []
    seen: dict[str, int] = {}
    for index, hook in enumerate(webhooks):
        key: KeyPath = ("webhooks", index)
        if not _ID.fullmatch(hook.id) or len(hook.id) > _ID_MAX:
            problems.append(
                ValidationProblem(
                    (*key, "id"),
                    f"{hook.id!r} is not a valid id; use lower-case letters, digits and "
                    f'inner dashes, at most {_ID_MAX} characters (e.g. "ops-alerts")',
                )
            )
        elif seen.setdefault(hook.id, index) != index:
            problems.append(
                ValidationProblem(
                    (*key, "id"), f"{hook.id!r} is already used by webhooks[{seen[hook.id]}]"
                )
            )
        problem = url_problem(hook.url, allow_private_networks=allow_private_networks)
        if problem:
            problems.append(ValidationProblem((*key, "url"), problem))
        if hook.secret == "":
            problems.append(
                ValidationProblem(
                    (*key, "secret"),
                    "is empty (an unset variable?); leave it out or set it, "
                    'e.g. "${WEBHOOK_SECRET}"',
                )
            )
        problems.extend(_pattern_problems(hook.events, (*key, "events")))
    for index, policy in enumerate(policies):
        key = ("notification_policies", index)
        if not policy.webhooks:
            problems.append(
                ValidationProblem(
                    (*key, "webhooks"), 'empty; name the webhooks it sends to, e.g. ["ops"]'
                )
            )
        for position, name in enumerate(policy.webhooks):
            if name not in seen:
                known = ", ".join(sorted(seen)) or "none"
                problems.append(
                    ValidationProblem(
                        (*key, "webhooks", position),
                        f"no [[webhooks]] entry has id {name!r} (defined: {known})",
                    )
                )
        problems.extend(_pattern_problems(policy.events, (*key, "events")))
    problems.extend(scope_problems(policies, ("notification_policies",)))
    return problems


def _pattern_problems(patterns: Sequence[str], key: KeyPath) -> list[ValidationProblem]:
    return [
        ValidationProblem((*key, position), problem)
        for position, pattern in enumerate(patterns)
        if (problem := event_pattern_problem(pattern))
    ]


# --- bodies ------------------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookEvent:
    """What a webhook says about one event. `detail` is literal-redacted SQL (or a
    migration summary), present on the events that carry it (the create events)."""

    event_id: str
    event: str
    occurred_at: str
    actor: str
    request_id: str | None = None
    database: str | None = None
    environment: str | None = None
    operation: str | None = None
    requester: str | None = None
    detail: str | None = None
    reason: str | None = None
    outcome: str = "success"


def render_body(event: WebhookEvent, format: WebhookFormat) -> str:
    """The exact JSON body a webhook of `format` receives (and its signature covers)."""
    generic = {
        "event": event.event,
        "event_id": event.event_id,
        "occurred_at": event.occurred_at,
        "request_id": event.request_id,
        "database": event.database,
        "environment": event.environment,
        "operation": event.operation,
        "actor": event.actor,
        "requester": event.requester,
        "detail": event.detail,
        "reason": event.reason,
        "outcome": event.outcome,
    }
    body: dict[str, Any] = generic if format is WebhookFormat.GENERIC else _slack(event)
    return json.dumps(body, separators=(",", ":"), sort_keys=True)


def _slack(event: WebhookEvent) -> dict[str, Any]:
    """A Slack incoming-webhook message: `text` for notifications, `blocks` for the channel."""
    scope = f"{event.database}/{event.environment}" if event.database else "-"
    headline = f"dbward: {event.event} for request {event.request_id or '-'} on {scope}"
    lines = [
        f"*Operation:* {event.operation or '-'}",
        f"*Requester:* {event.requester or '-'}",
        f"*By:* {event.actor}",
    ]
    if event.reason:
        lines.append(f"*Reason:* {_slack_escape(event.reason)}")
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{_slack_escape(headline)}*"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}},
    ]
    if event.detail:
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": f"```{_slack_escape(event.detail)}```"},
            }
        )
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": event.occurred_at}]})
    return {"text": headline, "blocks": blocks}


def _slack_escape(text: str) -> str:
    """Slack's three control characters (its "escaping text" rules)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# --- signing -----------------------------------------------------------------------------


def sign(secret: str, timestamp: int, body: str) -> str:
    """Hex HMAC-SHA256 of `<timestamp>.<body>` under `secret`."""
    message = f"{timestamp}.{body}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: str) -> str:
    """The `X-Dbward-Signature` value: `t=<unix seconds>,v1=<hex>`."""
    return f"t={timestamp},v1={sign(secret, timestamp, body)}"


# --- attempts ----------------------------------------------------------------------------


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass(frozen=True)
class AttemptResult:
    """What one send got: an HTTP status, or an error before any answer."""

    status_code: int | None = None
    error: str | None = None
    #: Refused before sending (a private address, a webhook gone from the config): no retry.
    refused: bool = False

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def retryable(self) -> bool:
        """Errors, 5xx, 408 and 429 may pass; other answers (4xx, a redirect) will not."""
        if self.refused:
            return False
        if self.status_code is None:
            return True
        return self.status_code >= 500 or self.status_code in (408, 429)


@dataclass(frozen=True)
class RetryPolicy:
    """`[webhook_delivery]`: attempts per delivery and the full-jitter delay between them."""

    max_attempts: int = 8
    initial_backoff_secs: float = 10.0
    max_backoff_secs: float = 3600.0

    def next_status(self, attempts: int, result: AttemptResult) -> DeliveryStatus:
        """The delivery's status after its `attempts`-th attempt got `result`."""
        if result.delivered:
            return DeliveryStatus.DELIVERED
        if not result.retryable or attempts >= self.max_attempts:
            return DeliveryStatus.FAILED
        return DeliveryStatus.PENDING

    def delay(self, attempts: int, uniform: Callable[[float, float], float]) -> float:
        """Seconds to wait after the `attempts`-th failed attempt."""
        backoff = FullJitterBackoff(self.initial_backoff_secs, self.max_backoff_secs)
        return backoff.delay(attempts, uniform)
