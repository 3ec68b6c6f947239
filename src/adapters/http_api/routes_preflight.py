"""Looking before submitting: preflight, policy resolution and schema snapshots.

docs/server.md §8.2, docs/preflight.md. `POST /api/preflight` is `async`: it may wait for
an agent's EXPLAIN without holding a thread. The two reads are plain functions FastAPI
runs in its thread pool.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool

from adapters.http_api.auth import current_principal
from adapters.http_api.input_checks import refuse_lone_surrogates
from adapters.http_api.routing import api_router
from application.server.configuration.policy_resolution import ResolvePolicies
from application.server.configuration.schemas import GetSchema
from application.server.preflight import DEFAULT_EXPLAIN_TIMEOUT_MS, PreflightInput, RunPreflight
from domain.server.rbac import Principal

__all__ = ["PreflightUseCases", "build_preflight_router"]

CallerDep = Annotated[Principal, Depends(current_principal)]


class _PreflightBody(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    database: str
    environment: str
    sql: str
    include_explain: bool = True
    explain_timeout_ms: Annotated[int, Field(ge=1, le=3_600_000)] = DEFAULT_EXPLAIN_TIMEOUT_MS

    check_text = field_validator("*")(refuse_lone_surrogates)


@dataclass(frozen=True)
class PreflightUseCases:
    run_preflight: RunPreflight
    resolve_policies: ResolvePolicies
    get_schema: GetSchema


def _json(content: object) -> Response:
    return Response(content=orjson.dumps(content), media_type="application/json")


def build_preflight_router(use_cases: PreflightUseCases) -> APIRouter:
    router = api_router()

    @router.post("/api/preflight")
    async def preflight(body: _PreflightBody, request: Request, principal: CallerDep) -> Response:
        report = await use_cases.run_preflight.run(
            principal,
            PreflightInput(
                database=body.database,
                environment=body.environment,
                sql=body.sql,
                include_explain=body.include_explain,
                explain_timeout_ms=body.explain_timeout_ms,
                client_ip=request.client.host if request.client else None,
            ),
        )
        return await run_in_threadpool(lambda: _json(report.to_json()))

    @router.get("/api/policy-resolution")
    def policy_resolution(
        principal: CallerDep,
        database: str,
        environment: str,
        operation: str | None = None,
    ) -> Response:
        resolution = use_cases.resolve_policies.resolve(principal, database, environment, operation)
        return _json(resolution.to_json())

    @router.get("/api/schemas/{database}")
    def schema(
        database: str,
        principal: CallerDep,
        environment: str | None = None,
        summary: bool = False,
        table: str | None = None,
    ) -> Response:
        return _json(
            use_cases.get_schema.get(principal, database, environment, summary=summary, table=table)
        )

    return router
