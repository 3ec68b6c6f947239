"""Webhook rules: routing, URL checks, bodies, signatures and the retry schedule."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json

import pytest

from domain.server.webhooks import (
    AttemptResult,
    DeliveryStatus,
    NotificationPolicy,
    RetryPolicy,
    Webhook,
    WebhookEvent,
    WebhookFormat,
    event_matches,
    is_private_address,
    render_body,
    route,
    signature_header,
    url_problem,
)

OPS = Webhook("ops", "https://ops.example.com")
PAGER = Webhook("pager", "https://pager.example.com", events=("request.break_glass",))
EVENT = WebhookEvent(
    event_id="e-1",
    event="request.created",
    occurred_at="2025-03-01T12:00:00.000000Z",
    actor="alice",
    request_id="r-1",
    database="app",
    environment="production",
    operation="execute_dml",
    requester="alice",
    detail="UPDATE t SET a = ? WHERE id = ?",
    reason="ticket <42> & more",
)


@pytest.mark.parametrize(
    ("patterns", "event", "matches"),
    [
        ((), "execution.lost", True),
        (("*",), "request.created", True),
        (("execution.*",), "execution.failed", True),
        (("execution.*",), "request.created", False),
        (("request.created",), "request.created", True),
        (("request.created",), "request.cancelled", False),
    ],
)
def test_event_patterns(patterns: tuple[str, ...], event: str, matches: bool) -> None:
    assert event_matches(patterns, event) is matches


class TestRouting:
    def test_without_a_policy_every_webhook_gets_what_its_own_filter_lets_through(self) -> None:
        assert route([OPS, PAGER], [], "request.created", "app", "production") == [OPS]
        assert route([OPS, PAGER], [], "request.break_glass", "app", "dev") == [OPS, PAGER]

    def test_the_most_specific_policy_chooses_the_webhooks(self) -> None:
        policies = [
            NotificationPolicy(("ops",)),
            NotificationPolicy(("pager",), "app", "production"),
        ]
        assert route([OPS, PAGER], policies, "request.break_glass", "app", "production") == [PAGER]
        assert route([OPS, PAGER], policies, "request.break_glass", "app", "dev") == [OPS]

    def test_a_policy_whose_events_miss_sends_nothing_for_its_scope(self) -> None:
        policies = [NotificationPolicy(("ops",), "app", "production", ("execution.*",))]
        assert route([OPS], policies, "request.created", "app", "production") == []
        assert route([OPS], policies, "execution.failed", "app", "production") == [OPS]

    def test_events_other_than_the_request_lifecycle_are_never_routed(self) -> None:
        assert route([OPS], [], "auth.failure", "", "") == []


class TestUrls:
    @pytest.mark.parametrize(
        "address",
        [
            "10.0.0.1",
            "172.16.0.1",
            "192.168.1.1",
            "127.0.0.1",
            "169.254.169.254",
            "::1",
            "fe80::1",
            "fd00::1",
            "0.0.0.0",
            "::ffff:127.0.0.1",
            "100.64.0.1",
            "224.0.0.1",
        ],
    )
    def test_non_public_addresses_are_private(self, address: str) -> None:
        assert is_private_address(ipaddress.ip_address(address))

    @pytest.mark.parametrize("address", ["93.184.216.34", "2606:4700::1111"])
    def test_public_addresses_are_not(self, address: str) -> None:
        assert not is_private_address(ipaddress.ip_address(address))

    def test_https_to_a_name_is_allowed(self) -> None:
        assert url_problem("https://hooks.example.com/x", allow_private_networks=False) is None

    def test_the_cloud_metadata_address_is_refused(self) -> None:
        problem = url_problem("https://169.254.169.254/latest", allow_private_networks=False)
        assert problem is not None and "allow_private_networks" in problem

    def test_allow_private_networks_admits_http_to_loopback(self) -> None:
        assert url_problem("http://127.0.0.1:8080/x", allow_private_networks=True) is None

    def test_credentials_in_the_url_are_refused(self) -> None:
        problem = url_problem("https://u:p@hooks.example.com", allow_private_networks=True)
        assert problem is not None and "credentials" in problem


class TestBodies:
    def test_the_generic_body_carries_the_event_fields(self) -> None:
        body = json.loads(render_body(EVENT, WebhookFormat.GENERIC))
        assert body == {
            "event": "request.created",
            "event_id": "e-1",
            "occurred_at": "2025-03-01T12:00:00.000000Z",
            "request_id": "r-1",
            "database": "app",
            "environment": "production",
            "operation": "execute_dml",
            "actor": "alice",
            "requester": "alice",
            "detail": "UPDATE t SET a = ? WHERE id = ?",
            "reason": "ticket <42> & more",
            "outcome": "success",
        }

    def test_the_slack_body_has_text_and_blocks_with_slack_escaping(self) -> None:
        body = json.loads(render_body(EVENT, WebhookFormat.SLACK))
        assert body["text"] == "dbward: request.created for request r-1 on app/production"
        kinds = [block["type"] for block in body["blocks"]]
        assert kinds == ["section", "section", "section", "context"]
        assert "ticket &lt;42&gt; &amp; more" in body["blocks"][1]["text"]["text"]
        assert body["blocks"][2]["text"]["text"] == "```UPDATE t SET a = ? WHERE id = ?```"


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = render_body(EVENT, WebhookFormat.GENERIC)
    expected = hmac.new(b"k", f"1700000000.{body}".encode(), hashlib.sha256).hexdigest()
    assert signature_header("k", 1700000000, body) == f"t=1700000000,v1={expected}"


class TestRetries:
    POLICY = RetryPolicy(max_attempts=4, initial_backoff_secs=10, max_backoff_secs=35)

    def test_the_ceiling_doubles_up_to_the_cap_and_the_delay_is_full_jitter(self) -> None:
        ceilings = [self.POLICY.delay(n, lambda low, high: high) for n in (1, 2, 3, 4)]
        assert ceilings == [10, 20, 35, 35]
        assert self.POLICY.delay(3, lambda low, high: low) == 0

    @pytest.mark.parametrize(
        ("result", "attempts", "status"),
        [
            (AttemptResult(status_code=204), 1, DeliveryStatus.DELIVERED),
            (AttemptResult(status_code=503), 1, DeliveryStatus.PENDING),
            (AttemptResult(status_code=429), 3, DeliveryStatus.PENDING),
            (AttemptResult(status_code=408), 1, DeliveryStatus.PENDING),
            (AttemptResult(error="timeout"), 1, DeliveryStatus.PENDING),
            (AttemptResult(status_code=503), 4, DeliveryStatus.FAILED),
            (AttemptResult(status_code=404), 1, DeliveryStatus.FAILED),
            (AttemptResult(status_code=301), 1, DeliveryStatus.FAILED),
            (AttemptResult(error="private", refused=True), 1, DeliveryStatus.FAILED),
        ],
    )
    def test_the_status_after_an_attempt(
        self, result: AttemptResult, attempts: int, status: DeliveryStatus
    ) -> None:
        assert self.POLICY.next_status(attempts, result) is status
