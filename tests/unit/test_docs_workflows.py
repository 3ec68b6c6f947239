"""Every TOML example of docs/workflows.md loads and behaves as the page says.

Each ```toml block is written to a file and loaded with the server's configuration loader;
the server's own composition root then serves it over a SQLite store (in process, no
sweeps). The story is derived from what was loaded, for every registered scope and for a
read and a write: users are created through the API for each role, group and user the
workflow names; auto-approved requests are dispatched at once; the others wait for each
step, which refuses the requester, a stranger and (by default) an earlier step's
approver, and accepts the people its selectors name; the requester resumes the approved
request, an agent claims it and returns a result, the requester, the approvers and the
result policy's `access` read it, a stranger does not, and a second resume obeys
`max_executions`. A workflow no story reached fails the test.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from adapters.config.server import load_server_settings
from adapters.store.migrations import migrate
from application.server.settings import ServerSettings
from domain.server.rbac import Selector, SelectorKind
from domain.server.workflows import AutoApproveMode, RiskLevel, StepMode, Workflow
from domain.shared.operations import Operation
from entrypoints.server.container import ServerContainer, build_app
from tests.repo import REPO_ROOT

PAGE = REPO_ROOT / "docs" / "workflows.md"
TOML_BLOCK = re.compile(r"^```toml\n(.*?)^```$", re.M | re.S)
SQL = {
    Operation.EXECUTE_SELECT: "SELECT id, note FROM accounts WHERE id = 1",
    Operation.EXECUTE_DML: "UPDATE accounts SET note = 'checked' WHERE id = 1",
}
ROWS = json.dumps({"rows": [{"id": 1}], "truncated": False, "truncation_reason": None})


def examples() -> list[str]:
    return TOML_BLOCK.findall(PAGE.read_text())


@dataclass
class Person:
    id: str
    headers: dict[str, str]


@dataclass
class Server:
    """One example served by the real app; people are created through the API."""

    client: TestClient
    settings: ServerSettings
    admin: dict[str, str]
    agent: dict[str, str]
    named: dict[str, Person] = field(default_factory=dict)
    count: Iterator[int] = field(default_factory=itertools.count)

    def person(self, roles: tuple[str, ...] = (), groups: tuple[str, ...] = ()) -> Person:
        return self._create(f"p{next(self.count)}", roles or ("requester",) * (not groups), groups)

    def matching(self, *selectors: Selector) -> Person:
        """A new person matched by every selector (the existing user for `user:x`)."""
        roles = tuple(s.name for s in selectors if s.kind is SelectorKind.ROLE)
        groups = tuple(s.name for s in selectors if s.kind is SelectorKind.GROUP)
        users = [s.name for s in selectors if s.kind is SelectorKind.USER]
        if users:
            (name,) = users
            if name not in self.named:
                self.named[name] = self._create(name, roles or ("requester",), groups)
            return self.named[name]
        return self.person(roles, groups)

    def _create(self, user: str, roles: tuple[str, ...], groups: tuple[str, ...]) -> Person:
        body = {"id": user, "roles": list(roles), "groups": list(groups)}
        created = self.client.post("/api/users", json=body, headers=self.admin)
        assert created.status_code == 201, created.text
        return Person(user, {"Authorization": f"Bearer {created.json()['token']}"})

    def status(self, request_id: str) -> dict[str, Any]:
        shown: dict[str, Any] = self.client.get(
            f"/api/requests/{request_id}", headers=self.admin
        ).json()
        return shown

    def approve(self, who: Person, request_id: str, selector: Selector) -> Any:
        return self.client.post(
            f"/api/requests/{request_id}/approve",
            json={"selector": str(selector), "comment": "docs story"},
            headers=who.headers,
        )

    def run_on_agent(self, request_id: str, database: str, environment: str) -> None:
        poll = {
            "agent_id": None,
            "capabilities": {
                "scopes": [{"database": database, "environment": environment}],
                "operations": ["execute_select", "execute_dml"],
            },
            "status": {"in_flight": 0, "in_flight_preflight": 0, "max_concurrent": 4,
                       "draining": False, "uptime_secs": 1, "active_jobs": []},
            "limit": 10,
            "agent_version": "0.2.0",
        }  # fmt: skip
        offered = self.client.post("/api/agent/poll", json=poll, headers=self.agent)
        assert request_id in [job["id"] for job in offered.json()["jobs"]], offered.text
        claimed = self.client.post(f"/api/agent/jobs/{request_id}/claim", headers=self.agent)
        assert claimed.status_code == 200, claimed.text
        done = self.client.post(
            f"/api/agent/jobs/{claimed.json()['execution_id']}/result",
            json={"success": True, "result_data": ROWS},
            headers=self.agent,
        )
        assert done.json()["status"] == "executed", done.text


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    containers: list[ServerContainer] = []

    def start(example: str, name: str) -> Server:
        directory = tmp_path / name
        directory.mkdir()
        (directory / "server.toml").write_text(example)
        settings = load_server_settings(directory / "server.toml", {})
        settings.state_dir.mkdir(mode=0o700)
        container = ServerContainer(settings=settings, version="0.3.0")
        containers.append(container)
        migrate(container.store().engine)
        container.bootstrapper().bootstrap(settings.state_dir, force=False)
        tokens = {
            kind: {"Authorization": f"Bearer {(settings.state_dir / kind).read_text().strip()}"}
            for kind in ("admin-token", "agent-token")
        }
        return Server(
            TestClient(build_app(container)),
            settings,
            tokens["admin-token"],
            tokens["agent-token"],
        )

    yield start
    for container in containers:
        container.store().close()


def auto_approved(workflow: Workflow, operation: Operation) -> bool:
    rule = workflow.auto_approve
    if rule is None:
        return False
    if rule.mode is AutoApproveMode.ALWAYS:
        return True
    # risk_based (docs/workflows.md §2): a read-only SELECT scores low; no agent uploaded
    # a schema snapshot here, so every write is unknown and waits.
    return (
        operation is Operation.EXECUTE_SELECT
        and rule.allow_read_only
        and rule.risk in (RiskLevel.LOW, RiskLevel.MEDIUM, RiskLevel.HIGH)
    )


def story(server: Server, database: str, environment: str, operation: Operation) -> None:
    workflow = server.settings.workflow_for(database, environment, operation)
    assert workflow is not None
    requester, stranger = server.person(), server.person()
    body = {"database": database, "environment": environment, "detail": SQL[operation]}
    if workflow.require_reason:
        refused = server.client.post("/api/requests", json=body, headers=requester.headers)
        assert refused.status_code == 400, refused.text
    created = server.client.post(
        "/api/requests", json={**body, "reason": "docs story"}, headers=requester.headers
    )
    assert created.status_code == 201, created.text
    request_id = created.json()["id"]
    assert created.json()["operation"] == operation.value
    readers = [requester]

    if auto_approved(workflow, operation):
        assert created.json()["status"] == "dispatched"
    else:
        assert created.json()["status"] == "pending"
        readers += approve_every_step(server, workflow, request_id, requester, stranger)
        resumed = server.client.post(
            f"/api/requests/{request_id}/resume", json={}, headers=requester.headers
        )
        assert resumed.status_code == 200, resumed.text
        assert (resumed.json()["status"], resumed.json()["resumed_from"]) == (
            "dispatched",
            "approved",
        )

    server.run_on_agent(request_id, database, environment)
    assert server.status(request_id)["status"] == "executed"
    policy = server.settings.result_policy_for(database, environment)
    readers += [server.matching(selector) for selector in policy.access]
    stream = f"/api/requests/{request_id}/result/stream"
    for reader in readers:
        answer = server.client.get(stream, headers=reader.headers)
        assert answer.status_code == 200, (reader.id, answer.text)
        assert answer.json()["result_data"]["rows"] == [{"id": 1}]
    assert server.client.get(stream, headers=stranger.headers).status_code == 403

    again = server.client.post(
        f"/api/requests/{request_id}/resume", json={}, headers=requester.headers
    )
    limit = server.settings.execution_policy_for(database, environment).max_executions
    assert again.status_code == (200 if limit > 1 else 409), again.text


def approve_every_step(
    server: Server, workflow: Workflow, request_id: str, requester: Person, stranger: Person
) -> list[Person]:
    """Approve step by step as the docs describe; the approvers who did it."""
    steps = workflow.steps
    assert server.status(request_id)["approvers"] == [str(s) for s in steps[0].selectors]
    approvers: list[Person] = []
    #: An approver of the previous step who also matches this step's first selector.
    crossing: Person | None = None
    for index, step in enumerate(steps):
        first = step.approvers[0].selector
        if not workflow.allow_self_approve:
            assert server.approve(requester, request_id, first).status_code == 403
        assert server.approve(stranger, request_id, first).status_code == 403
        if crossing is not None and not workflow.allow_same_approver_across_steps:
            assert server.approve(crossing, request_id, first).status_code == 403
        following = steps[index + 1].approvers[0].selector if index + 1 < len(steps) else None
        if following is not None and following.kind is SelectorKind.USER:
            following = None  # a named user cannot be made to match
        entries = step.approvers if step.mode is StepMode.ALL else step.approvers[:1]
        needed = [entry.selector for entry in entries for _ in range(entry.min)]
        crossing = None
        for count, selector in enumerate(needed, start=1):
            if crossing is None and following is not None:
                person = crossing = server.matching(selector, following)
            else:
                person = server.matching(selector)
            answer = server.approve(person, request_id, selector)
            assert answer.status_code == 200, answer.text
            last = index == len(steps) - 1 and count == len(needed)
            assert answer.json()["status"] == ("approved" if last else "pending")
            approvers.append(person)
        if index + 1 < len(steps):
            waiting = server.status(request_id)["approvers"]
            assert waiting == [str(s) for s in steps[index + 1].selectors]
    return approvers


def scopes(settings: ServerSettings) -> list[tuple[str, str]]:
    return sorted((scope.database, scope.environment) for scope in settings.registered_scopes)


@pytest.mark.parametrize("number", range(len(examples())))
def test_the_example_loads_and_runs_its_story(serve: Any, number: int) -> None:
    server: Server = serve(examples()[number], f"example-{number}")
    reached: set[str] = set()
    for (database, environment), operation in itertools.product(scopes(server.settings), SQL):
        workflow = server.settings.workflow_for(database, environment, operation)
        if workflow is None:
            continue
        story(server, database, environment, operation)
        reached.add(workflow.id)
    assert reached == {workflow.id for workflow in server.settings.workflows}


def test_the_page_shows_one_step_two_steps_and_auto_approval_in_staging(tmp_path: Path) -> None:
    workflows: list[Workflow] = []
    for number, example in enumerate(examples()):
        path = tmp_path / f"{number}.toml"
        path.write_text(example)
        workflows += load_server_settings(path, {}).workflows
    shapes = {
        (len(w.steps), w.auto_approve.mode if w.auto_approve else None, w.environment)
        for w in workflows
    }
    assert (1, None, "production") in shapes
    assert (2, None, "production") in shapes
    assert (0, AutoApproveMode.ALWAYS, "staging") in shapes
    assert any(mode is AutoApproveMode.RISK_BASED for _, mode, _ in shapes)
    assert any(step.mode is StepMode.ANY for w in workflows for step in w.steps)
    assert any(a.min > 1 for w in workflows for step in w.steps for a in step.approvers)
