"""Read-only configuration routes: workflows, policies, roles, groups, databases.

docs/server.md §8.2. Workflows, execution, result and SQL review policies, roles and groups live in
server.toml; writing them through the API answers 405 `config_only` (edit the file and
restart). Route functions are sync: FastAPI runs them in its thread pool.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from adapters.http_api.auth import current_principal
from adapters.http_api.routing import api_router
from application.server.configuration.databases import ListDatabases
from application.server.configuration.groups import GroupView, ListGroups
from application.server.configuration.policies import ListPolicies
from application.server.configuration.roles import ListRoles
from application.server.configuration.workflows import ListWorkflows
from application.server.requests.snapshots import workflow_as_dict
from domain.server.errors import ConfigOnly
from domain.server.execution_policies import ExecutionPolicy, ResultPolicy
from domain.server.rbac import Principal, Role
from domain.server.sql_review import SqlReviewPolicy
from domain.server.workflows import Workflow

__all__ = ["ConfigUseCases", "build_config_router"]

CallerDep = Annotated[Principal, Depends(current_principal)]

_MUTATIONS = ["POST", "PUT", "PATCH", "DELETE"]
CONFIG_ONLY_MESSAGE = "this resource is config-managed; update server.toml and restart"


@dataclass(frozen=True)
class ConfigUseCases:
    workflows: ListWorkflows
    policies: ListPolicies
    roles: ListRoles
    groups: ListGroups
    databases: ListDatabases


# --- JSON shapes ---------------------------------------------------------------------------


def _workflow_json(workflow: Workflow) -> dict[str, Any]:
    return {**workflow_as_dict(workflow), "source": "config"}


def _execution_policy_json(policy: ExecutionPolicy) -> dict[str, Any]:
    return {
        "id": policy.id,
        "database": policy.database,
        "environment": policy.environment,
        "max_executions": policy.max_executions,
        "execution_window_secs": policy.execution_window_secs,
        "retry_on_failure": policy.retry_on_failure,
        "statement_timeout_secs": policy.statement_timeout_secs,
        "max_statement_timeout_secs": policy.max_statement_timeout_secs,
        "migration_statement_timeout_secs": policy.migration_statement_timeout_secs,
        "migration_lease_duration_secs": policy.migration_lease_duration_secs,
        "max_rows": policy.max_rows,
    }


def _result_policy_json(policy: ResultPolicy) -> dict[str, Any]:
    return {
        "id": policy.id,
        "database": policy.database,
        "environment": policy.environment,
        "retention_days": policy.retention_days,
        "delivery_mode": policy.delivery_mode.value,
        "access": [str(selector) for selector in policy.access],
    }


def _review_policy_json(policy: SqlReviewPolicy) -> dict[str, Any]:
    """A policy with the effective action of every rule (its own, else the default)."""
    return {
        "id": policy.id,
        "database": policy.database,
        "environment": policy.environment,
        "source": policy.source,
        "rules": {rule.value: action.value for rule, action in policy.effective_rules().items()},
    }


def _role_json(role: Role) -> dict[str, Any]:
    return {
        "name": role.name,
        "permissions": list(role.permissions),
        "databases": list(role.databases) or ["*"],
        "environments": list(role.environments) or ["*"],
        "built_in": role.built_in,
    }


def _group_json(group: GroupView) -> dict[str, Any]:
    return {"name": group.name, "roles": list(group.roles), "members": list(group.members)}


# --- the router ----------------------------------------------------------------------------


def build_config_router(use_cases: ConfigUseCases) -> APIRouter:
    router = api_router()

    @router.get("/api/workflows")
    def workflows(caller: CallerDep) -> dict[str, Any]:
        return {"workflows": [_workflow_json(w) for w in use_cases.workflows.list(caller)]}

    @router.get("/api/execution-policies")
    def execution_policies(caller: CallerDep) -> dict[str, Any]:
        found = use_cases.policies.execution_policies(caller)
        return {
            "execution_policies": [
                {**_execution_policy_json(policy), "source": "config"} for policy in found.policies
            ],
            "default": {**_execution_policy_json(found.default), "source": "default"},
        }

    @router.get("/api/result-policies")
    def result_policies(caller: CallerDep) -> dict[str, Any]:
        found = use_cases.policies.result_policies(caller)
        return {
            "result_policies": [
                {**_result_policy_json(policy), "source": "config"} for policy in found.policies
            ],
            "default": {**_result_policy_json(found.default), "source": "default"},
        }

    @router.get("/api/result-policies/{policy_id}")
    def result_policy(policy_id: str, caller: CallerDep) -> dict[str, Any]:
        policy, default = use_cases.policies.result_policy(caller, policy_id)
        return {**_result_policy_json(policy), "source": "default" if default else "config"}

    @router.get("/api/sql-review-policies")
    def review_policies(caller: CallerDep) -> dict[str, Any]:
        found = use_cases.policies.review_policies(caller)
        return {
            "sql_review_policies": [
                *(_review_policy_json(policy) for policy in found.policies),
                _review_policy_json(found.builtin),
            ]
        }

    @router.get("/api/roles")
    def roles(caller: CallerDep) -> dict[str, Any]:
        return {"roles": [_role_json(role) for role in use_cases.roles.list(caller)]}

    @router.get("/api/groups")
    def groups(caller: CallerDep) -> dict[str, Any]:
        return {"groups": [_group_json(group) for group in use_cases.groups.list(caller)]}

    @router.get("/api/groups/{name}")
    def group(name: str, caller: CallerDep) -> dict[str, Any]:
        return _group_json(use_cases.groups.get(caller, name))

    @router.get("/api/databases")
    def databases(caller: CallerDep) -> dict[str, Any]:
        return {
            "databases": [
                {
                    "database": view.scope.database,
                    "environment": view.scope.environment,
                    "agents": [
                        {
                            "id": agent.id,
                            "agent_id": agent.agent_id,
                            "status": agent.status.value,
                            "last_poll_ago_secs": agent.last_poll_ago_secs,
                            "degraded": view.scope in agent.degraded_scopes,
                        }
                        for agent in view.agents
                    ],
                }
                for view in use_cases.databases.list(caller)
            ]
        }

    @router.api_route("/api/workflows", methods=_MUTATIONS, include_in_schema=False)
    @router.api_route("/api/workflows/{_id}", methods=_MUTATIONS, include_in_schema=False)
    @router.api_route("/api/execution-policies", methods=_MUTATIONS, include_in_schema=False)
    @router.api_route("/api/execution-policies/{_id}", methods=_MUTATIONS, include_in_schema=False)
    @router.api_route("/api/result-policies", methods=_MUTATIONS, include_in_schema=False)
    @router.api_route("/api/result-policies/{_id}", methods=_MUTATIONS, include_in_schema=False)
    @router.api_route("/api/sql-review-policies", methods=_MUTATIONS, include_in_schema=False)
    @router.api_route("/api/sql-review-policies/{_id}", methods=_MUTATIONS, include_in_schema=False)
    @router.api_route("/api/roles", methods=_MUTATIONS, include_in_schema=False)
    @router.api_route("/api/roles/{_id}", methods=_MUTATIONS, include_in_schema=False)
    @router.api_route("/api/groups", methods=_MUTATIONS, include_in_schema=False)
    @router.api_route("/api/groups/{_id}", methods=_MUTATIONS, include_in_schema=False)
    def config_only(_caller: CallerDep) -> None:
        raise ConfigOnly(CONFIG_ONLY_MESSAGE)

    return router
