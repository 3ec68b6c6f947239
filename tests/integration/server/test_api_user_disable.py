"""Suspending or deleting a user cancels what they asked for (docs/server.md §4.5).

A real `dbward server` process: a disabled user's tokens stop working and none of their
requests can still run, whether it waits for approval or was already dispatched.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.test_end_to_end import ServerProcess

pytestmark = pytest.mark.integration

WORKFLOWS = """
[[databases]]
name = "app"
environments = ["development", "production"]
[[workflows]]
database = "app"
environment = "development"
auto_approve = { mode = "always" }
[[workflows]]
database = "app"
environment = "production"
[[workflows.steps]]
[[workflows.steps.approvers]]
role = "approver"
min = 1
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path)
    process.config.write_text(
        f'state_dir = "{process.state}"\nlisten = "127.0.0.1:{process.port}"\n' + WORKFLOWS
    )
    process.start()
    try:
        yield process
    finally:
        assert process.stop() == 0, process.log_path.read_text()


def _user_with_requests(admin: httpx.Client, server: ServerProcess, user: str) -> list[str]:
    """A requester with a pending, a dispatched (no agent) and a finished-by-cancel request."""
    created = admin.post("/api/users", json={"id": user, "roles": ["requester"]})
    assert created.status_code == 201, created.text
    headers = {"Authorization": f"Bearer {created.json()['token']}"}
    ids = []
    for environment in ("production", "development", "production"):
        answer = httpx.post(
            f"{server.url}/api/requests",
            headers=headers,
            json={"database": "app", "environment": environment, "detail": "SELECT 1"},
        )
        assert answer.status_code in (200, 201), answer.text
        ids.append(answer.json()["id"])
    cancelled = httpx.post(
        f"{server.url}/api/requests/{ids[2]}/cancel", headers=headers, json={"reason": "mine"}
    )
    assert cancelled.status_code == 200, cancelled.text
    return ids


@pytest.mark.parametrize(
    ("action", "reason"),
    [("suspend", "user suspended"), ("delete", "user deleted")],
)
def test_disabling_a_user_cancels_their_open_requests_and_revokes_their_tokens(
    server: ServerProcess, action: str, reason: str
) -> None:
    with server.client() as admin:
        pending, dispatched, already_cancelled = _user_with_requests(admin, server, "rita")
        statuses = {
            rid: admin.get(f"/api/requests/{rid}").json()["status"] for rid in (pending, dispatched)
        }
        assert statuses == {pending: "pending", dispatched: "dispatched"}
        other = admin.post("/api/users", json={"id": "alex", "roles": ["requester"]}).json()
        alex_request = httpx.post(
            f"{server.url}/api/requests",
            headers={"Authorization": f"Bearer {other['token']}"},
            json={"database": "app", "environment": "production", "detail": "SELECT 2"},
        ).json()["id"]

        if action == "suspend":
            answer = admin.post("/api/users/rita/suspend")
        else:
            answer = admin.delete("/api/users/rita")
        assert answer.status_code == 200, answer.text
        assert sorted(answer.json()["cancelled_requests"]) == sorted([pending, dispatched])

        for request_id in (pending, dispatched):
            request = admin.get(f"/api/requests/{request_id}").json()
            assert (request["status"], request["cancel_reason"]) == ("cancelled", reason)
        untouched = admin.get(f"/api/requests/{already_cancelled}").json()
        assert untouched["cancel_reason"] == "mine"
        assert admin.get(f"/api/requests/{alex_request}").json()["status"] == "pending"
        tokens = admin.get("/api/tokens", params={"subject": "rita"}).json()["tokens"]
        assert tokens and all(token["status"] == "revoked" for token in tokens)
