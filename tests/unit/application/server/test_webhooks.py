"""Webhook deliveries: queued with the event that causes them, sent with signatures,
retried with backoff, given up after `max_attempts` (docs/operations.md "Webhooks")."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from application.server.audit_events import audit_event
from application.server.ports.webhooks import DeliveryOutcome, WebhookDelivery
from application.server.settings import WebhookSettings
from application.server.webhooks import ListWebhooks, WebhookOutbox, WebhookSender
from domain.server.errors import NotFound
from domain.server.webhooks import (
    AttemptResult,
    DeliveryStatus,
    NotificationPolicy,
    RetryPolicy,
    Webhook,
    WebhookFormat,
    sign,
)
from tests.unit.application.server.test_requests_and_claims import (
    ALICE,
    ServerHarness,
    build_harness,
    default_settings,
)

OPS = Webhook("ops", "https://ops.example.com/hook", secret="s3cret")
CHAT = Webhook(
    "chat", "https://chat.example.com/hook", WebhookFormat.SLACK, events=("request.created",)
)
SECRET_LITERAL = "hunter2-very-secret"
DEFAULT_RETRY = RetryPolicy()


@dataclass
class ScriptedTransport:
    """Answers each send with the next scripted result (then 200s), remembering each call."""

    script: list[AttemptResult] = field(default_factory=list)
    calls: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    def send(self, url: str, body: str, headers: dict[str, str]) -> AttemptResult:
        self.calls.append((url, body, headers))
        return self.script.pop(0) if self.script else AttemptResult(status_code=200)


def harness_with(tmp_path: Path, hooks: WebhookSettings) -> ServerHarness:
    settings = default_settings(tmp_path, webhooks=hooks)
    counter = iter(range(1_000_000))
    return build_harness(
        tmp_path,
        settings,
        listener=WebhookOutbox(hooks, lambda: f"d-{next(counter):06d}"),
    )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerHarness]:
    harness = harness_with(tmp_path, WebhookSettings(webhooks=(OPS, CHAT)))
    yield harness
    harness.close()


def deliveries(server: ServerHarness) -> list[WebhookDelivery]:
    with server.store.read() as session:
        return list(reversed(session.webhooks.list(None, limit=200, offset=0)))


def sender(
    server: ServerHarness, transport: ScriptedTransport, retry: RetryPolicy = DEFAULT_RETRY
) -> WebhookSender:
    hooks = replace(server.settings.webhooks, retry=retry)
    ids = iter(range(1_000_000))
    return WebhookSender(
        store=server.store,
        settings=hooks,
        transport=transport,
        clock=server.clock,
        new_id=lambda: f"claim-{next(ids)}",
        metrics=server.metrics,
        uniform=lambda low, high: high,  # the backoff's ceiling, so the test knows it
    )


# --- queueing ------------------------------------------------------------------------------------


def test_a_pending_create_queues_one_delivery_per_webhook_that_wants_it(
    server: ServerHarness,
) -> None:
    request_id = server.create(environment="staging")  # waits for a DBA: request.created
    queued = deliveries(server)
    assert [(d.webhook_id, d.event_type) for d in queued] == [
        ("ops", "request.created"),
        ("chat", "request.created"),
    ]
    generic = json.loads(queued[0].body)
    assert generic["event"] == "request.created"
    assert generic["request_id"] == request_id
    assert (generic["database"], generic["environment"]) == ("app", "staging")
    assert generic["requester"] == "alice"
    assert generic["actor"] == "alice"
    slack = json.loads(queued[1].body)
    assert request_id in slack["text"]
    assert [block["type"] for block in slack["blocks"]][-1] == "context"


def test_an_auto_approved_create_announces_both_of_its_events(server: ServerHarness) -> None:
    server.create(environment="production")
    assert [d.event_type for d in deliveries(server)] == [
        "request.auto_approved",
        "request.dispatched",
    ]


def test_no_payload_carries_a_literal_of_the_sql(server: ServerHarness) -> None:
    server.create(
        environment="staging",
        detail=f"SELECT * FROM users WHERE password = '{SECRET_LITERAL}' AND id = 4242",
    )
    bodies = [d.body for d in deliveries(server)]
    assert bodies
    for body in bodies:
        assert SECRET_LITERAL not in body
        assert "4242" not in body
    assert "password = ?" in json.loads(bodies[0])["detail"]


def test_an_event_rolled_back_is_never_announced(server: ServerHarness) -> None:
    with pytest.raises(RuntimeError), server.store.write() as session:
        session.audit.append(
            audit_event(
                new_id=lambda: "e-1",
                now=server.clock.now(),
                event_type="request.approved",
                category="approval",
                actor=ALICE,
                database="app",
                environment="production",
            )
        )
        assert len(session.webhooks.list(None, limit=10, offset=0)) == 1
        raise RuntimeError("the state change failed")
    assert deliveries(server) == []


def test_events_that_are_not_webhook_events_queue_nothing(server: ServerHarness) -> None:
    with server.store.write() as session:
        session.audit.append(
            audit_event(
                new_id=lambda: "e-2",
                now=server.clock.now(),
                event_type="auth.failure",
                category="auth",
                actor=None,
            )
        )
    assert deliveries(server) == []


def test_a_notification_policy_routes_its_scope_and_leaves_the_others_to_every_webhook(
    tmp_path: Path,
) -> None:
    policy = NotificationPolicy(("chat",), "app", "staging", events=("request.*",))
    harness = harness_with(
        tmp_path, WebhookSettings(webhooks=(OPS, CHAT), notification_policies=(policy,))
    )
    try:
        harness.create(environment="staging")  # the policy's scope: chat only
        harness.create(environment="production")  # no policy: every webhook, own filters
        assert [(d.webhook_id, d.event_type) for d in deliveries(harness)] == [
            ("chat", "request.created"),
            ("ops", "request.auto_approved"),
            ("ops", "request.dispatched"),
        ]
    finally:
        harness.close()


def test_webhooks_and_notification_policies_are_found_by_id_or_404_naming_them() -> None:
    policy = NotificationPolicy(("chat",), "app", "staging", events=("request.*",))
    views = ListWebhooks(WebhookSettings(webhooks=(OPS, CHAT), notification_policies=(policy,)))
    assert views.get(ALICE, "chat") == CHAT
    assert views.policy(ALICE, "np:app:staging") == policy
    with pytest.raises(NotFound) as missing_hook:
        views.get(ALICE, "pager")
    with pytest.raises(NotFound) as missing_policy:
        views.policy(ALICE, "np:app:production")
    assert missing_hook.value.code == "webhook.not_found"
    assert missing_policy.value.code == "notification_policy.not_found"


# --- sending -------------------------------------------------------------------------------------


def test_a_delivery_is_sent_signed_and_marked_delivered(server: ServerHarness) -> None:
    server.create(environment="staging")
    transport = ScriptedTransport()
    assert sender(server, transport).deliver_due(server.clock.now()) == 2
    url, body, headers = transport.calls[0]
    assert url == OPS.url
    assert headers["X-Dbward-Event"] == "request.created"
    timestamp, signature = (
        part.split("=", 1)[1] for part in headers["X-Dbward-Signature"].split(",")
    )
    assert signature == sign("s3cret", int(timestamp), body)
    assert "X-Dbward-Signature" not in transport.calls[1][2]  # chat has no secret
    assert {d.status for d in deliveries(server)} == {DeliveryStatus.DELIVERED}
    assert server.metrics.webhook_attempts == [DeliveryStatus.DELIVERED] * 2
    assert sender(server, transport).deliver_due(server.clock.now()) == 0


def test_failures_are_retried_after_the_backoff_until_one_succeeds(tmp_path: Path) -> None:
    harness = harness_with(tmp_path, WebhookSettings(webhooks=(OPS,)))
    try:
        harness.create(environment="staging")
        transport = ScriptedTransport([AttemptResult(status_code=503), AttemptResult(error="boom")])
        send = sender(harness, transport, RetryPolicy(5, 10.0, 3600.0))
        assert send.deliver_due(harness.clock.now()) == 1
        assert send.deliver_due(harness.clock.now()) == 0  # not due for 10 s
        harness.clock.advance(10)
        assert send.deliver_due(harness.clock.now()) == 1
        harness.clock.advance(19)
        assert send.deliver_due(harness.clock.now()) == 0  # the second wait is 20 s
        harness.clock.advance(1)
        assert send.deliver_due(harness.clock.now()) == 1
        [delivery] = deliveries(harness)
        assert (delivery.status, delivery.attempts) == (DeliveryStatus.DELIVERED, 3)
        assert delivery.last_status_code == 200
        assert harness.metrics.webhook_attempts == [
            DeliveryStatus.PENDING,
            DeliveryStatus.PENDING,
            DeliveryStatus.DELIVERED,
        ]
    finally:
        harness.close()


@pytest.mark.parametrize(
    ("script", "max_attempts", "attempts"),
    [
        ([AttemptResult(status_code=400)], 5, 1),
        ([AttemptResult(status_code=302)], 5, 1),
        ([AttemptResult(error="refused", refused=True)], 5, 1),
        ([AttemptResult(status_code=500)] * 2, 2, 2),
    ],
)
def test_a_delivery_fails_on_an_answer_that_will_not_change_or_after_max_attempts(
    tmp_path: Path, script: list[AttemptResult], max_attempts: int, attempts: int
) -> None:
    harness = harness_with(tmp_path, WebhookSettings(webhooks=(OPS,)))
    try:
        harness.create(environment="staging")
        send = sender(harness, ScriptedTransport(list(script)), RetryPolicy(max_attempts, 1, 1))
        for _ in range(5):
            send.deliver_due(harness.clock.now())
            harness.clock.advance(1)
        [delivery] = deliveries(harness)
        assert (delivery.status, delivery.attempts) == (DeliveryStatus.FAILED, attempts)
        assert delivery.finished_at is not None
        assert harness.metrics.webhook_attempts[-1] is DeliveryStatus.FAILED
    finally:
        harness.close()


def test_a_webhook_removed_from_the_config_fails_its_deliveries(server: ServerHarness) -> None:
    server.create(environment="staging")
    transport = ScriptedTransport()
    only_ops = replace(server.settings.webhooks, webhooks=(OPS,))
    WebhookSender(
        store=server.store,
        settings=only_ops,
        transport=transport,
        clock=server.clock,
        new_id=lambda: "claim",
    ).deliver_due(server.clock.now())
    assert [(d.webhook_id, d.status) for d in deliveries(server)] == [
        ("ops", DeliveryStatus.DELIVERED),
        ("chat", DeliveryStatus.FAILED),
    ]
    assert len(transport.calls) == 1


def test_a_sender_that_outlived_its_claim_cannot_record_over_the_new_owner(
    server: ServerHarness,
) -> None:
    server.create(environment="staging")
    now = server.clock.now()
    with server.store.write() as session:
        stale = session.webhooks.claim_due(now, claim_until=now, claim_token="old", limit=10)
    assert len(stale) == 2
    server.clock.advance(1)  # the old claim is stale now
    transport = ScriptedTransport()
    assert sender(server, transport).deliver_due(server.clock.now()) == 2
    late = server.clock.now()
    outcome_of_old = DeliveryOutcome(DeliveryStatus.FAILED, 9, late, 500, "late", late)
    with server.store.write() as session:
        assert session.webhooks.finish_attempt(stale[0].id, "old", outcome_of_old) is False
    assert {d.status for d in deliveries(server)} == {DeliveryStatus.DELIVERED}
