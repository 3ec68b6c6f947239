"""What makes the audit chain trustworthy beyond its own hashes (docs/server.md §6.4-§6.6).

A hash chain alone proves only that the rows agree with each other: someone who can write
the store can rewrite the newest events and recompute every hash after them. Three signed
statements, all made with the server's Ed25519 key, pin the chain from outside:

* an **anchor** (`GET /api/audit/head`): "the event at position P is E with hash H". A
  verifier keeps it; `GET /api/audit/verify?anchor=…` later proves the chain still holds
  that event at that position, so a rewrite of anything up to it is caught.
* a **signed checkpoint** (`audit.signed_checkpoint` events, written by a sweep): the same
  statement inside the log, plus how many events came since the previous checkpoint.
* a **purge checkpoint** (`audit_purge_checkpoints`, and an `audit.purge_checkpoint`
  event): "the events up to position P, the last of them E with hash H, were purged
  because they were older than T". The retained chain may start there and nowhere else.

The signed bytes are defined here, once, as `anchor_message`, `checkpoint_message` and
`purge_message`: ASCII text, `|`-separated, each starting with its own label so that no
signature over one kind of statement (or over an execution token) is valid for another.
The domain does no cryptography: verification takes a `SignatureCheck` from the caller.

Positions count events from the first event ever written (1-based); a purge does not
renumber them, because its checkpoint records how many events it removed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from domain.server.audit import AuditEvent, event_hash
from domain.server.errors import Validation
from domain.shared.timestamps import parse_timestamp

__all__ = [
    "ANCHOR_PREFIX",
    "PURGE_CHECKPOINT_EVENT",
    "SIGNED_CHECKPOINT_EVENT",
    "Anchor",
    "BrokenReason",
    "ChainHead",
    "ChainVerdict",
    "CheckpointProgress",
    "PurgeCheckpoint",
    "SignatureCheck",
    "anchor_message",
    "checkpoint_due",
    "checkpoint_message",
    "checkpoint_metadata",
    "key_id_of",
    "purge_message",
    "verify_chain",
]

SIGNED_CHECKPOINT_EVENT = "audit.signed_checkpoint"
PURGE_CHECKPOINT_EVENT = "audit.purge_checkpoint"

#: A signed checkpoint is due after this many events since the previous one…
CHECKPOINT_EVERY_EVENTS = 100
#: …or when the previous one is this old and at least one event came since.
CHECKPOINT_MAX_AGE_SECS = 3600

#: `(message, signature) -> valid`, with the server's public key.
SignatureCheck = Callable[[bytes, bytes], bool]

_HASH = re.compile(r"[0-9a-f]{64}")
_KEY_ID = re.compile(r"ed25519:[0-9a-f]{16}")
_SIGNATURE = re.compile(r"[0-9a-f]{128}")
_EVENT_ID = re.compile(r"[A-Za-z0-9._:@-]{1,128}")


def key_id_of(public_key_hex: str) -> str:
    """`ed25519:` + the first 16 hex digits of SHA-256 over the raw 32-byte public key."""
    return "ed25519:" + hashlib.sha256(bytes.fromhex(public_key_hex)).hexdigest()[:16]


# --- the chain head and anchors -------------------------------------------------------------


@dataclass(frozen=True)
class ChainHead:
    """The newest event: its id, hash, position (1-based, from the first event ever) and time."""

    event_id: str
    event_hash: str
    position: int
    created_at: str


def anchor_message(event_id: str, event_hash_hex: str, position: int) -> bytes:
    """The exact bytes an anchor signs: `dbward-audit-anchor:v1|<position>|<id>|<hash>`."""
    return f"dbward-audit-anchor:v1|{position}|{event_id}|{event_hash_hex}".encode()


#: An encoded anchor starts with this, then base64url (no padding) of the fields.
ANCHOR_PREFIX = "a1."


@dataclass(frozen=True)
class Anchor:
    """A signed chain head, as `GET /api/audit/head` hands it out.

    Encoded (`encode`) as `a1.` + base64url-without-padding of
    `<position>|<event_id>|<event_hash>|<key_id>|<signature hex>`: URL-safe, one token.
    """

    event_id: str
    event_hash: str
    position: int
    key_id: str
    signature: bytes

    @property
    def message(self) -> bytes:
        return anchor_message(self.event_id, self.event_hash, self.position)

    def encode(self) -> str:
        text = "|".join(
            (
                str(self.position),
                self.event_id,
                self.event_hash,
                self.key_id,
                self.signature.hex(),
            )
        )
        return ANCHOR_PREFIX + base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Anchor:
        """Parse an encoded anchor; `Validation` (400) saying what is wrong otherwise."""
        if not text.startswith(ANCHOR_PREFIX) or len(text) > 1024:
            raise Validation(
                f"anchor must be the 'anchor' value of GET /api/audit/head ({ANCHOR_PREFIX}…)"
            )
        body = text[len(ANCHOR_PREFIX) :]
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode("ascii")
        except (binascii.Error, ValueError):
            raise Validation("anchor is not valid base64url") from None
        parts = raw.split("|")
        if len(parts) != 5:
            raise Validation("anchor does not have the five fields of an audit anchor")
        position, event_id, hash_hex, key_id, signature = parts
        if not position.isdigit() or not 0 < len(position) <= 18 or int(position) < 1:
            raise Validation("anchor position must be a positive integer")
        if not _EVENT_ID.fullmatch(event_id):
            raise Validation("anchor event id is malformed")
        if not _HASH.fullmatch(hash_hex):
            raise Validation("anchor event hash must be 64 lowercase hex digits")
        if not _KEY_ID.fullmatch(key_id):
            raise Validation("anchor key id is malformed")
        if not _SIGNATURE.fullmatch(signature):
            raise Validation("anchor signature must be 128 lowercase hex digits")
        return cls(event_id, hash_hex, int(position), key_id, bytes.fromhex(signature))


# --- signed checkpoints ---------------------------------------------------------------------


def checkpoint_message(head: ChainHead, events_since: int, created_at: str) -> bytes:
    """The bytes a signed checkpoint signs:
    `dbward-audit-checkpoint:v1|<position>|<head id>|<head hash>|<events since>|<created_at>`.
    """
    return (
        f"dbward-audit-checkpoint:v1|{head.position}|{head.event_id}|{head.event_hash}"
        f"|{events_since}|{created_at}"
    ).encode()


def checkpoint_metadata(
    head: ChainHead, events_since: int, created_at: str, key_id: str, signature: bytes
) -> dict[str, Any]:
    """The metadata of an `audit.signed_checkpoint` event (what verify re-checks)."""
    return {
        "chain_head_id": head.event_id,
        "chain_head_hash": head.event_hash,
        "chain_head_position": head.position,
        "event_count_since_last_checkpoint": events_since,
        "key_id": key_id,
        "signature": signature.hex(),
    }


@dataclass(frozen=True)
class CheckpointProgress:
    """Events appended since the newest signed checkpoint, and when that one was written."""

    events_since: int
    last_checkpoint_at: str | None


def checkpoint_due(
    progress: CheckpointProgress, now: datetime, *, max_age_secs: float = CHECKPOINT_MAX_AGE_SECS
) -> bool:
    """`CHECKPOINT_EVERY_EVENTS` events since the last checkpoint, or at least one event
    once the last checkpoint is `max_age_secs` old (or there is none yet)."""
    if progress.events_since == 0:
        return False
    if progress.events_since >= CHECKPOINT_EVERY_EVENTS or progress.last_checkpoint_at is None:
        return True
    age = now - parse_timestamp(progress.last_checkpoint_at)
    return age.total_seconds() >= max_age_secs


# --- purge checkpoints ----------------------------------------------------------------------


def purge_message(
    last_purged_event_id: str,
    last_purged_hash: str,
    purged_through_position: int,
    purged_before: str,
) -> bytes:
    """The bytes a purge checkpoint signs:
    `dbward-audit-purge:v1|<position>|<last purged id>|<last purged hash>|<purged before>`.
    """
    return (
        f"dbward-audit-purge:v1|{purged_through_position}|{last_purged_event_id}"
        f"|{last_purged_hash}|{purged_before}"
    ).encode()


@dataclass(frozen=True)
class PurgeCheckpoint:
    """A purge of the chain's prefix: the retained chain starts after `last_purged_hash`."""

    id: str
    last_purged_event_id: str
    last_purged_hash: str
    #: Events purged since the first event ever (positions keep counting from here).
    purged_through_position: int
    #: Events this purge removed.
    purged_count: int
    #: The cutoff: every purged event is older than this.
    purged_before: str
    key_id: str
    signature: bytes
    created_at: str

    @property
    def message(self) -> bytes:
        return purge_message(
            self.last_purged_event_id,
            self.last_purged_hash,
            self.purged_through_position,
            self.purged_before,
        )

    def metadata(self) -> dict[str, Any]:
        """The metadata of the `audit.purge_checkpoint` event that records this purge."""
        return {
            "purge_checkpoint_id": self.id,
            "last_purged_event_id": self.last_purged_event_id,
            "last_purged_hash": self.last_purged_hash,
            "purged_through_position": self.purged_through_position,
            "purged_count": self.purged_count,
            "purged_before": self.purged_before,
            "key_id": self.key_id,
            "signature": self.signature.hex(),
        }


# --- verification ---------------------------------------------------------------------------


class BrokenReason(StrEnum):
    """Why verification stopped trusting the chain at `ChainVerdict.first_broken_id`."""

    #: The event's stored hash is not the hash of its fields.
    HASH_MISMATCH = "hash_mismatch"
    #: The event does not name the previous event's hash.
    PREV_HASH_MISMATCH = "prev_hash_mismatch"
    #: The first retained event follows no (validly signed) purge checkpoint.
    PURGE_BOUNDARY_UNAUTHENTICATED = "purge_boundary_unauthenticated"
    #: A signed or purge checkpoint event whose statement or signature does not hold.
    CHECKPOINT_INVALID = "checkpoint_invalid"
    #: The anchored position holds another event, or the anchored event's hash changed.
    ANCHOR_MISMATCH = "anchor_mismatch"
    #: The chain ends before the anchored position: events were deleted.
    ANCHOR_MISSING = "anchor_missing"


@dataclass(frozen=True)
class ChainVerdict:
    total_events: int
    first_broken_id: str | None
    reason: BrokenReason | None = None
    #: With an anchor: True when the anchored event was found unchanged; None without one.
    anchor_verified: bool | None = None
    #: With an anchor: its event was purged by retention, so it proves nothing any more.
    anchor_purged: bool = False

    @property
    def valid(self) -> bool:
        return self.first_broken_id is None and not self.anchor_purged


def verify_chain(
    events: Iterable[AuditEvent],
    *,
    purge_boundary: Callable[[str], PurgeCheckpoint | None] = lambda _hash: None,
    signature_ok: SignatureCheck | None = None,
    anchor: Anchor | None = None,
) -> ChainVerdict:
    """Walk the retained events in chain order; name the first one that cannot be trusted.

    * The first event starts the chain (no previous hash), or follows the purge checkpoint
      that `purge_boundary(prev_hash)` finds, whose signature must hold.
    * Every event links to its predecessor and hashes to its stored hash.
    * Every signed checkpoint states its predecessor's id, hash and position and the
      number of events since the previous checkpoint truthfully, under a valid signature;
      a purge checkpoint event's signature holds too.
    * With an `anchor` (whose signature the caller has checked), the event at its position
      must be the anchored one with the anchored hash.

    `signature_ok=None` skips signature checks (the statements are still compared).
    """
    total = 0
    broken: tuple[str, BrokenReason] | None = None
    previous_hash: str | None = None
    previous_id: str | None = None
    position = 0
    start_position = 0
    since_checkpoint = 0
    anchor_seen = False

    def signed(message: bytes, signature_hex: object) -> bool:
        if signature_ok is None:
            return True
        if not isinstance(signature_hex, str) or not _SIGNATURE.fullmatch(signature_hex):
            return False
        return signature_ok(message, bytes.fromhex(signature_hex))

    for event in events:
        total += 1
        if broken is not None:
            continue
        if total == 1 and event.prev_hash is not None:
            boundary = purge_boundary(event.prev_hash)
            if boundary is None or not signed(boundary.message, boundary.signature.hex()):
                broken = (event.id, BrokenReason.PURGE_BOUNDARY_UNAUTHENTICATED)
                continue
            previous_hash, previous_id = boundary.last_purged_hash, boundary.last_purged_event_id
            position = start_position = boundary.purged_through_position
        position += 1
        if event.prev_hash != previous_hash:
            broken = (event.id, BrokenReason.PREV_HASH_MISMATCH)
            continue
        if event.event_hash != event_hash(event, event.prev_hash):
            broken = (event.id, BrokenReason.HASH_MISMATCH)
            continue
        if event.event_type == SIGNED_CHECKPOINT_EVENT:
            if not _checkpoint_holds(
                event, previous_id, previous_hash, position - 1, since_checkpoint, signed
            ):
                broken = (event.id, BrokenReason.CHECKPOINT_INVALID)
                continue
            since_checkpoint = 0
        else:
            since_checkpoint += 1
            if event.event_type == PURGE_CHECKPOINT_EVENT and not _purge_event_holds(event, signed):
                broken = (event.id, BrokenReason.CHECKPOINT_INVALID)
                continue
        if anchor is not None and position == anchor.position:
            anchor_seen = True
            if event.id != anchor.event_id or event.event_hash != anchor.event_hash:
                broken = (event.id, BrokenReason.ANCHOR_MISMATCH)
                continue
        previous_hash, previous_id = event.event_hash, event.id

    anchor_purged = False
    if anchor is not None and broken is None and not anchor_seen:
        if total > 0 and anchor.position <= start_position:
            anchor_purged = True
        else:
            broken = (anchor.event_id, BrokenReason.ANCHOR_MISSING)
    return ChainVerdict(
        total_events=total,
        first_broken_id=None if broken is None else broken[0],
        reason=None if broken is None else broken[1],
        anchor_verified=None if anchor is None else broken is None and not anchor_purged,
        anchor_purged=anchor_purged,
    )


def _metadata(event: AuditEvent) -> dict[str, Any] | None:
    try:
        parsed = json.loads(event.metadata_json)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _checkpoint_holds(
    event: AuditEvent,
    previous_id: str | None,
    previous_hash: str | None,
    previous_position: int,
    since_checkpoint: int,
    signed: Callable[[bytes, object], bool],
) -> bool:
    meta = _metadata(event)
    if meta is None or previous_id is None or previous_hash is None:
        return False
    head = ChainHead(previous_id, previous_hash, previous_position, event.created_at)
    stated = (
        meta.get("chain_head_id"),
        meta.get("chain_head_hash"),
        meta.get("chain_head_position"),
        meta.get("event_count_since_last_checkpoint"),
    )
    if stated != (previous_id, previous_hash, previous_position, since_checkpoint):
        return False
    return signed(
        checkpoint_message(head, since_checkpoint, event.created_at), meta.get("signature")
    )


def _purge_event_holds(event: AuditEvent, signed: Callable[[bytes, object], bool]) -> bool:
    meta = _metadata(event)
    if meta is None:
        return False
    try:
        message = purge_message(
            str(meta["last_purged_event_id"]),
            str(meta["last_purged_hash"]),
            int(meta["purged_through_position"]),
            str(meta["purged_before"]),
        )
    except (KeyError, TypeError, ValueError):
        return False
    return signed(message, meta.get("signature"))
