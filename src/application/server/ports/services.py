"""Ports: what the server's services need from the outside world, and nothing more.

Adapters implement these; unit tests implement them with small hand-written fakes.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from domain.server.errors import PayloadTooLarge
from domain.server.sql_classification import Classification
from domain.shared.scopes import Scope

if TYPE_CHECKING:
    from application.server.ports.work.requests import RequestRecord


class SqlClassifier(Protocol):
    """Classifies and redacts submitted SQL (docs/server.md §5.1-§5.3, §6.5).

    `dialect` is the wire name of the target database: `"postgresql"` or `"mysql"`
    (anything else is a `ValueError`). Neither method raises for bad SQL: `classify`
    fails closed (rejected, parse failure or unknown), `redact` answers
    `domain.server.sql_classification.REDACTION_FAILED`.
    """

    def classify(self, sql: str, dialect: str) -> Classification: ...

    def redact(self, sql: str, dialect: str) -> str: ...


class ServerClock(Protocol):
    """The wall clock the server's use cases read (always timezone-aware UTC)."""

    def now(self) -> datetime: ...


class ExecutionTokenSigner(Protocol):
    """Signs execution tokens with the server's Ed25519 key (docs/protocol.md §3.1, §4.1).

    `sign` returns the 64-byte Ed25519 signature of `message` (pure EdDSA, no prehash);
    `public_key_hex` is the raw 32-byte public key as 64 lowercase hex characters, the
    value `GET /api/public-key` publishes.
    """

    def sign(self, message: bytes) -> bytes: ...

    def public_key_hex(self) -> str: ...


class AuditSigner(Protocol):
    """The server's Ed25519 key, vouching for the audit chain (docs/server.md §6.6).

    The same key that signs execution tokens: `sign` returns the 64-byte signature of
    `message`; `verify` checks one against this key's public half (False, never an
    exception, for a wrong or malformed signature); `public_key_hex` is the raw public key
    as 64 lowercase hex characters.
    """

    def sign(self, message: bytes) -> bytes: ...

    def verify(self, message: bytes, signature: bytes) -> bool: ...

    def public_key_hex(self) -> str: ...


class SecretUnreadable(RuntimeError):
    """A sealed secret that the configured key-encryption key cannot open.

    The message says which secret and what to do: every replica needs the same key.
    """


class SecretCipher(Protocol):
    """Seals the secrets kept in the store with the key-encryption key (docs/server.md §7.4).

    `name` is bound to the sealed bytes (authenticated, not secret), so a value copied to
    another secret's row does not open there. `open` raises `SecretUnreadable` for a wrong
    key or tampered bytes, never returns garbage.
    """

    def seal(self, name: str, plaintext: bytes) -> bytes: ...

    def open(self, name: str, sealed: bytes) -> bytes: ...


class ResultContentTooLarge(PayloadTooLarge):
    """A result above the store's size limit (413)."""


class ResultContentStore(Protocol):
    """Persisted result bodies, addressed by key (`<request_id>/<execution_id>`).

    `put` replaces atomically: a reader sees the old content or the new one, never a
    partial file. Content above `max_bytes` is refused with `ResultContentTooLarge`
    before anything is written. `get` answers None for a key that holds nothing;
    `delete` of a missing key is not an error.
    """

    @property
    def max_bytes(self) -> int: ...

    def kept_in_store(self, size: int) -> bool:
        """Whether content of `size` bytes lives in the store's own `result_contents`
        table: then a write session adds it (`StoreSession.result_contents`) in the
        transaction that records the result, instead of `put` beforehand."""
        ...

    def put(self, key: str, content: bytes) -> None: ...

    def get(self, key: str) -> bytes | None: ...

    def delete(self, key: str) -> None: ...


class NotificationWaiter(Protocol):
    """One armed subscription to some topics. Use as a context manager (it unsubscribes).

    Notifications that arrive after arming and before `wait` are not lost: `wait` then
    returns at once. `wait` consumes what it saw, so the next `wait` waits for a newer one.
    """

    async def wait(self, timeout_secs: float) -> bool:
        """True when notified (since arming or the last `wait`), False on timeout."""
        ...

    def named_jobs(self) -> tuple[RequestRecord, ...] | None:
        """The dispatched requests the notifications `wait` consumed named (`notify`'s
        `job`), or None when one of them named none: then only the store says what is
        there. Valid until the next `wait`."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> NotificationWaiter: ...

    def __exit__(self, *exc_info: object) -> None: ...


class DispatchNotifier(Protocol):
    """Wakes long-polls (agent poll, result stream, `GET /api/requests/{id}?wait=`).

    `arm` is called on the event loop, *before* the caller checks the store, so a change
    committed between the check and the wait still wakes it. `notify` is called after
    the commit from any thread (sync use cases run in a thread pool); it must be
    thread-safe and never block. Notifications are hints: every waiter re-reads the store
    (or, for a dispatch that names its request, claims that request, which re-reads it),
    and re-checks it periodically anyway. With a PostgreSQL store they also reach the
    other replicas (docs/server.md §7.4), without the request.
    """

    def arm(self, topics: Iterable[str]) -> NotificationWaiter: ...

    def notify(self, topic: str, job: RequestRecord | None = None) -> None:
        """`job`: on a dispatch topic, the request just dispatched, as committed: the
        waiting polls of this process may claim it without looking for it first."""
        ...

    def notify_all(self) -> None:
        """Wake every waiter (server draining: held polls answer at once)."""
        ...


def dispatch_topic(scope: Scope) -> str:
    """Work became available for agents serving `scope` (a dispatch, an EXPLAIN job)."""
    return f"dispatch:{scope.database}:{scope.environment}"


def request_topic(request_id: str) -> str:
    """A request changed status, or its result arrived."""
    return f"request:{request_id}"


def result_topic(request_id: str) -> str:
    """A request's result stream may end: its result arrived, or it reached a final status
    without running (rejected, cancelled, expired). Notified beside `request_topic`, so a
    stream is not woken by the changes that cannot end it (a claim)."""
    return f"result:{request_id}"


def preflight_topic(job_id: str) -> str:
    """A preflight EXPLAIN job was answered."""
    return f"preflight:{job_id}"
