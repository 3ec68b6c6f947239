"""Webhook routes: the configured webhooks and notification policies, and the deliveries.

docs/operations.md "Webhooks". Webhooks and notification policies live in server.toml:
`GET` lists them (`workflow.read`, secrets never shown, only whether one is set), writes
answer 405 `config_only`. `GET /api/webhook-deliveries` (`metrics.view`) shows the outbox,
newest first, without bodies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from adapters.http_api.auth import current_principal
from adapters.http_api.input_checks import MAX_OFFSET
from adapters.http_api.routes_config import CONFIG_ONLY_MESSAGE
from adapters.http_api.routing import api_router
from application.server.ports.webhooks import WebhookDelivery
from application.server.webhooks import ListWebhookDeliveries, ListWebhooks
from domain.server.errors import ConfigOnly
from domain.server.rbac import Principal
from domain.server.webhooks import DeliveryStatus, NotificationPolicy, Webhook
from domain.shared.timestamps import format_timestamp

__all__ = ["WebhookUseCases", "build_webhook_router"]

CallerDep = Annotated[Principal, Depends(current_principal)]
_MUTATIONS = ["POST", "PUT", "PATCH", "DELETE"]
#: The most deliveries one page returns.
MAX_DELIVERIES_LIMIT = 200


@dataclass(frozen=True)
class WebhookUseCases:
    webhooks: ListWebhooks
    deliveries: ListWebhookDeliveries


def _webhook_json(hook: Webhook) -> dict[str, Any]:
    return {
        "id": hook.id,
        "url": hook.url,
        "format": hook.format.value,
        "events": list(hook.events),
        "signed": bool(hook.secret),
        "source": "config",
    }


def _policy_json(policy: NotificationPolicy) -> dict[str, Any]:
    return {
        "id": policy.id,
        "database": policy.database,
        "environment": policy.environment,
        "webhooks": list(policy.webhooks),
        "events": list(policy.events),
        "source": "config",
    }


def _delivery_json(delivery: WebhookDelivery) -> dict[str, Any]:
    def ts(value: Any) -> str | None:
        return None if value is None else format_timestamp(value)

    return {
        "id": delivery.id,
        "webhook_id": delivery.webhook_id,
        "event_id": delivery.event_id,
        "event": delivery.event_type,
        "request_id": delivery.request_id,
        "status": delivery.status.value,
        "attempts": delivery.attempts,
        "next_attempt_at": ts(delivery.next_attempt_at)
        if delivery.status is DeliveryStatus.PENDING
        else None,
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
        "created_at": ts(delivery.created_at),
        "finished_at": ts(delivery.finished_at),
    }


def build_webhook_router(use_cases: WebhookUseCases) -> APIRouter:
    router = api_router()

    @router.get("/api/webhooks")
    def webhooks(caller: CallerDep) -> dict[str, Any]:
        return {"webhooks": [_webhook_json(h) for h in use_cases.webhooks.list(caller)]}

    @router.get("/api/webhooks/{webhook_id}")
    def webhook(webhook_id: str, caller: CallerDep) -> dict[str, Any]:
        return _webhook_json(use_cases.webhooks.get(caller, webhook_id))

    @router.get("/api/notification-policies")
    def notification_policies(caller: CallerDep) -> dict[str, Any]:
        return {
            "notification_policies": [_policy_json(p) for p in use_cases.webhooks.policies(caller)]
        }

    @router.get("/api/notification-policies/{policy_id}")
    def notification_policy(policy_id: str, caller: CallerDep) -> dict[str, Any]:
        return _policy_json(use_cases.webhooks.policy(caller, policy_id))

    @router.get("/api/webhook-deliveries")
    def deliveries(
        caller: CallerDep,
        status: DeliveryStatus | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_DELIVERIES_LIMIT)] = 50,
        offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    ) -> dict[str, Any]:
        found = use_cases.deliveries.list(caller, status, limit=limit, offset=offset)
        return {
            "deliveries": [_delivery_json(d) for d in found.deliveries],
            "total": found.total,
            "limit": limit,
            "offset": offset,
        }

    @router.api_route("/api/webhooks", methods=_MUTATIONS, include_in_schema=False)
    @router.api_route("/api/webhooks/{_id}", methods=_MUTATIONS, include_in_schema=False)
    @router.api_route("/api/notification-policies", methods=_MUTATIONS, include_in_schema=False)
    @router.api_route(
        "/api/notification-policies/{_id}", methods=_MUTATIONS, include_in_schema=False
    )
    def config_only(_caller: CallerDep) -> None:
        raise ConfigOnly(CONFIG_ONLY_MESSAGE)

    return router
