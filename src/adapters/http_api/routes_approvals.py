"""The approval API (docs/server.md §2.4, §2.5, §8.2): approve and reject a pending request.

No permission gate: approval rights come from the request's workflow only, so the use
cases decide who may; agent tokens never reach these routes (the middleware keeps them to
`/api/agent/*`) and the use cases refuse them again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, field_validator

from adapters.http_api.auth import current_principal
from adapters.http_api.input_checks import refuse_lone_surrogates
from adapters.http_api.routing import api_router
from application.server.approvals.approve import ApproveRequest
from application.server.approvals.reject import RejectRequest
from domain.server.errors import Validation
from domain.server.rbac import Principal

__all__ = ["ApprovalUseCases", "build_approval_router"]


class _ApproveBody(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    comment: str | None = None
    selector: str | None = None

    check_text = field_validator("*")(refuse_lone_surrogates)


class _RejectBody(BaseModel):
    """dbward 0.2 clients send `comment`; `reason` is the name the rest of the API uses."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    reason: str | None = None
    comment: str | None = None

    check_text = field_validator("*")(refuse_lone_surrogates)


@dataclass(frozen=True)
class ApprovalUseCases:
    approve_request: ApproveRequest
    reject_request: RejectRequest


def build_approval_router(use_cases: ApprovalUseCases) -> APIRouter:
    router = api_router()

    @router.post("/api/requests/{request_id}/approve")
    def approve(
        request_id: str,
        principal: Annotated[Principal, Depends(current_principal)],
        body: _ApproveBody | None = None,
    ) -> JSONResponse:
        approved = use_cases.approve_request.approve(
            principal,
            request_id,
            comment=None if body is None else body.comment,
            selector=None if body is None else body.selector,
        )
        return JSONResponse(
            {
                "id": approved.id,
                "status": approved.status.value,
                "approved_by": approved.approved_by,
                "matched_selector": approved.matched_selector,
                "step_completed": approved.step_completed,
                "current_step": approved.current_step,
                "total_steps": approved.total_steps,
            }
        )

    @router.post("/api/requests/{request_id}/reject")
    def reject(
        request_id: str,
        principal: Annotated[Principal, Depends(current_principal)],
        body: _RejectBody | None = None,
    ) -> JSONResponse:
        reason = None if body is None else body.reason
        comment = None if body is None else body.comment
        if reason is not None and comment is not None and reason != comment:
            raise Validation("give the reason once: reason or comment, not both")
        request_id, status = use_cases.reject_request.reject(
            principal, request_id, reason if reason is not None else comment
        )
        return JSONResponse({"id": request_id, "status": status.value})

    return router
