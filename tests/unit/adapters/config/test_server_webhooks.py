"""`[[webhooks]]`, `[[notification_policies]]`, `allow_private_networks` and
`[webhook_delivery]` in server.toml (docs/operations.md "Webhooks")."""

from __future__ import annotations

from pathlib import Path

import pytest

from domain.server.webhooks import NotificationPolicy, RetryPolicy, Webhook, WebhookFormat
from tests.unit.adapters.config.test_server import WORKFLOW, config, error, error_lines, load, top

HOOK = """
[[webhooks]]
id = "ops"
url = "https://hooks.example.com/dbward"
"""


def test_webhooks_and_policies_load_with_their_defaults(tmp_path: Path) -> None:
    text = config(
        WORKFLOW,
        HOOK,
        """
        [[webhooks]]
        id = "chat"
        url = "https://hooks.slack.com/services/T/B/X"
        format = "slack"
        secret = "${HOOK_SECRET}"
        events = ["execution.*", "request.created"]

        [[notification_policies]]
        database = "app"
        environment = "production"
        webhooks = ["chat"]
        """,
    )
    settings = load(tmp_path, text, {"HOOK_SECRET": "s3cret"}).webhooks
    assert settings.webhooks == (
        Webhook("ops", "https://hooks.example.com/dbward"),
        Webhook(
            "chat",
            "https://hooks.slack.com/services/T/B/X",
            WebhookFormat.SLACK,
            "s3cret",
            ("execution.*", "request.created"),
        ),
    )
    assert settings.notification_policies == (NotificationPolicy(("chat",), "app", "production"),)
    assert settings.allow_private_networks is False
    assert settings.retry == RetryPolicy()
    assert settings.timeout_secs == 10.0


def test_webhook_delivery_settings_are_read(tmp_path: Path) -> None:
    text = config(
        WORKFLOW,
        "[webhook_delivery]\nmax_attempts = 3\ninitial_backoff_secs = 0.5\n"
        "max_backoff_secs = 30\ntimeout_secs = 2",
    )
    settings = load(tmp_path, text).webhooks
    assert settings.retry == RetryPolicy(3, 0.5, 30.0)
    assert settings.timeout_secs == 2.0


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            '[[webhooks]]\nid = "Ops!"\nurl = "https://h.example.com"',
            "webhooks[0].id: 'Ops!' is not a valid id; use lower-case letters, digits and "
            'inner dashes, at most 64 characters (e.g. "ops-alerts")',
        ),
        (
            HOOK + '[[webhooks]]\nid = "ops"\nurl = "https://h.example.com"',
            "webhooks[1].id: 'ops' is already used by webhooks[0]",
        ),
        (
            '[[webhooks]]\nid = "ops"\nurl = "http://h.example.com/x"',
            "webhooks[0].url: must use https (http is allowed only with "
            "allow_private_networks = true)",
        ),
        (
            '[[webhooks]]\nid = "ops"\nurl = "https://10.1.2.3/x"',
            "webhooks[0].url: 10.1.2.3 is a private, loopback or link-local address; set "
            "allow_private_networks = true to allow webhooks to such addresses",
        ),
        (
            '[[webhooks]]\nid = "ops"\nurl = "https://[::1]:8443/x"',
            "webhooks[0].url: ::1 is a private, loopback or link-local address; set "
            "allow_private_networks = true to allow webhooks to such addresses",
        ),
        (
            '[[webhooks]]\nid = "ops"\nurl = "https://localhost/x"',
            "webhooks[0].url: localhost is a private, loopback or link-local address; set "
            "allow_private_networks = true to allow webhooks to such addresses",
        ),
        (
            '[[webhooks]]\nid = "ops"\nurl = "ftp://h.example.com/x"',
            "webhooks[0].url: 'ftp://h.example.com/x' is not an http(s) URL; write "
            "https://host/path",
        ),
        (
            HOOK + 'format = "teams"',
            'webhooks[0].format: must be one of "generic", "slack", got string "teams"',
        ),
        (
            HOOK + 'events = ["request.approve"]',
            "webhooks[0].events[0]: 'request.approve' matches no webhook event; use \"*\", "
            'a family such as "execution.*", or one of: request.created, '
            "request.auto_approved, request.break_glass, step.approved, request.approved, "
            "request.rejected, request.cancelled, request.dispatched, request.dispatch_timeout, "
            "request.expired, execution.started, execution.completed, execution.failed, "
            "execution.lost",
        ),
        (
            HOOK + '[[notification_policies]]\nwebhooks = ["pager"]',
            "notification_policies[0].webhooks[0]: no [[webhooks]] entry has id 'pager' "
            "(defined: ops)",
        ),
        (
            HOOK + '[[notification_policies]]\ndatabase = "billing"\nwebhooks = ["ops"]',
            "notification_policies[0].database: database 'billing' is not registered; add it "
            "to [[databases]] (registered: app)",
        ),
        (
            HOOK + '[[notification_policies]]\nwebhooks = ["ops"]\n'
            '[[notification_policies]]\nwebhooks = ["ops"]',
            "notification_policies[1]: same database '*' and environment '*' as "
            "notification_policies[0], so it would never apply; merge the two",
        ),
        (
            '[[notification_policies]]\ndatabase = "app"',
            "notification_policies[0].webhooks: required key is missing; add the ids of the "
            '[[webhooks]] it sends to, e.g. webhooks = ["ops"]',
        ),
        (
            "[webhook_delivery]\ninitial_backoff_secs = 100\nmax_backoff_secs = 10",
            "webhook_delivery.initial_backoff_secs: 100.0 is above max_backoff_secs (10.0); "
            "lower it or raise max_backoff_secs",
        ),
    ],
)
def test_invalid_entries_name_the_key(tmp_path: Path, extra: str, expected: str) -> None:
    assert error(tmp_path, config(WORKFLOW, extra)) == expected


def test_an_empty_secret_from_an_unset_default_is_refused_without_echoing(tmp_path: Path) -> None:
    text = config(WORKFLOW, HOOK + 'secret = "${HOOK_SECRET:-}"')
    assert error(tmp_path, text) == (
        "webhooks[0].secret: is empty (an unset variable?); leave it out or set it, "
        'e.g. "${WEBHOOK_SECRET}"'
    )


def test_a_missing_secret_variable_is_an_error_naming_the_key(tmp_path: Path) -> None:
    lines = error_lines(tmp_path, config(WORKFLOW, HOOK + 'secret = "${HOOK_SECRET}"'))
    assert len(lines) == 1
    assert lines[0].startswith("webhooks[0].secret: ")
    assert "HOOK_SECRET" in lines[0]


def test_allow_private_networks_admits_http_and_private_addresses(tmp_path: Path) -> None:
    text = top(
        "allow_private_networks = true",
        '[[webhooks]]\nid = "local"\nurl = "http://127.0.0.1:9000/hook"',
    )
    settings = load(tmp_path, text).webhooks
    assert settings.allow_private_networks is True
    assert settings.webhooks[0].url == "http://127.0.0.1:9000/hook"
