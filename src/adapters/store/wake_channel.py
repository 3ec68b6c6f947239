"""Long-poll wake-ups across replicas: PostgreSQL `LISTEN/NOTIFY` (docs/server.md §7.4).

Replicas sharing a PostgreSQL store share no memory, so a request created on one replica
would reach an agent long-polling another only at its periodic re-check. This
`DispatchNotifier` wraps the process's own notifier and, for each `notify(topic)`, also
sends `NOTIFY dbward_wake, '<topic>'`; every replica keeps one connection that `LISTEN`s
on the channel and re-publishes each topic into its own notifier, so the held poll wakes
within milliseconds.

Two threads, each with its own psycopg connection (the store's pool is left alone):

* the publisher drains a queue, so `notify` never blocks its caller (a use case that has
  just committed) and a burst of topics goes out in one `pg_notify` round trip;
* the listener waits for notifications and skips the publisher's own (the local notifier
  had them already).

Both reconnect after a failure with tenacity, waiting by the domain's full-jitter backoff.
Wake-ups are hints: a topic lost while a connection is down costs a waiter its periodic
re-check, and after the listener reconnects it wakes every local waiter once, so none
sleeps through what it missed.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
from collections.abc import Iterable

import psycopg
from sqlalchemy.engine import make_url
from tenacity import RetryCallState, Retrying, retry_if_exception_type

from application.server.ports.services import DispatchNotifier, NotificationWaiter
from application.server.ports.work.requests import RequestRecord
from domain.shared.backoff import FullJitterBackoff

__all__ = ["WAKE_CHANNEL", "PostgresWakeChannel"]

log = logging.getLogger("dbward.server.wake")

WAKE_CHANNEL = "dbward_wake"
#: 0.1 s, 0.2 s, … up to 15 s, fully jittered: replicas losing PostgreSQL together do not
#: reconnect in lockstep.
_RECONNECT_BACKOFF = FullJitterBackoff(base_secs=0.1)
#: How often the listener looks at the stop flag while no notification arrives.
_LISTEN_SLICE_SECS = 0.5
#: Topics sent in one round trip at most.
_BATCH = 256


class _Stopped(Exception):
    """The channel was closed while waiting to reconnect."""


class PostgresWakeChannel:
    """Implements `DispatchNotifier`: the local notifier, plus NOTIFY/LISTEN between replicas."""

    def __init__(self, store_url: str, local: DispatchNotifier) -> None:
        self._conninfo = make_url(store_url).set(drivername="postgresql").render_as_string(False)
        self._local = local
        self._topics: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._publisher_pid: int | None = None
        self._threads: list[threading.Thread] = []
        #: Set while the listener's LISTEN is in place (tests, diagnostics).
        self.listening = threading.Event()

    # --- DispatchNotifier ---------------------------------------------------------------

    def arm(self, topics: Iterable[str]) -> NotificationWaiter:
        return self._local.arm(topics)

    def notify(self, topic: str, job: RequestRecord | None = None) -> None:
        """The named `job` stays in this process: the other replicas look it up."""
        self._local.notify(topic, job)
        self._topics.put(topic)

    def notify_all(self) -> None:
        """Local only: draining is this replica's business, not the others'."""
        self._local.notify_all()

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        for target, name in ((self._listen, "wake-listener"), (self._publish, "wake-publisher")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        self._stop.set()
        self._topics.put(None)
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()

    # --- the two threads ----------------------------------------------------------------

    def _listen(self) -> None:
        reconnected = False
        while not self._stop.is_set():
            try:
                conn = self._connect("listener")
            except _Stopped:
                return
            try:
                with conn:
                    conn.execute(f"LISTEN {WAKE_CHANNEL}")
                    self.listening.set()
                    if reconnected:
                        self._local.notify_all()  # whatever was sent while we were away
                    while not self._stop.is_set():
                        for notification in conn.notifies(timeout=_LISTEN_SLICE_SECS):
                            if notification.pid != self._publisher_pid:
                                self._local.notify(notification.payload)
            except psycopg.Error as exc:
                log.warning("wake listener lost its PostgreSQL connection: %s", exc)
            self.listening.clear()
            reconnected = True

    def _publish(self) -> None:
        conn: psycopg.Connection[tuple[object, ...]] | None = None
        try:
            while True:
                batch = self._next_batch()
                if batch is None:
                    return
                try:
                    if conn is None or conn.closed:
                        conn = self._connect("publisher")
                        self._publisher_pid = conn.info.backend_pid
                    conn.execute(
                        "SELECT pg_notify(%s, topic) FROM unnest(%s::text[]) AS topic",
                        (WAKE_CHANNEL, batch),
                    )
                except _Stopped:
                    return
                except psycopg.Error as exc:
                    log.warning("wake publisher: %d wake-up(s) not sent: %s", len(batch), exc)
                    if conn is not None:
                        conn.close()
                    conn = None
        finally:
            if conn is not None:
                conn.close()

    def _next_batch(self) -> list[str] | None:
        """The next distinct topics to send; None once closed."""
        first = self._topics.get()
        if first is None:
            return None
        batch = {first: None}
        while len(batch) < _BATCH:
            try:
                topic = self._topics.get_nowait()
            except queue.Empty:
                break
            if topic is None:
                self._topics.put(None)  # seen again by the next call, which stops
                break
            batch[topic] = None
        return list(batch)

    def _connect(self, role: str) -> psycopg.Connection[tuple[object, ...]]:
        def wait(state: RetryCallState) -> float:
            return _RECONNECT_BACKOFF.delay(state.attempt_number, random.uniform)

        def sleep(seconds: float) -> None:
            if self._stop.wait(seconds):
                raise _Stopped

        def before_sleep(state: RetryCallState) -> None:
            outcome = state.outcome
            error = outcome.exception() if outcome is not None else None
            log.warning("wake %s cannot connect to PostgreSQL (attempt %d): %s",
                        role, state.attempt_number, error)  # fmt: skip

        if self._stop.is_set():
            raise _Stopped
        retrying = Retrying(
            retry=retry_if_exception_type(psycopg.OperationalError),
            wait=wait,
            sleep=sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        conn: psycopg.Connection[tuple[object, ...]] = retrying(
            psycopg.connect, self._conninfo, autocommit=True
        )
        return conn
