"""The image and the compose stack on a real Docker engine: built, started, healthy.

Machines without a Docker engine (the CI machine among them) skip this one test: it is the
only skip CI allows, because no engine exists there to run it.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.databases import docker_reachable
from tests.repo import REPO_ROOT

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def compose_project() -> Iterator[str]:
    if shutil.which("docker") is None or not docker_reachable():
        pytest.skip("no Docker engine on this machine (the one skip CI allows)")
    project = f"dbward-test-{uuid.uuid4().hex[:8]}"
    base = ["docker", "compose", "--project-name", project]
    subprocess.run(
        [*base, "up", "--build", "--detach", "--wait", "--wait-timeout", "300"],
        cwd=REPO_ROOT,
        check=True,
        timeout=900,
    )
    try:
        yield project
    finally:
        subprocess.run([*base, "down", "--volumes"], cwd=REPO_ROOT, check=False, timeout=300)


def test_the_stack_comes_up_healthy_and_the_server_is_ready(compose_project: str) -> None:
    states = subprocess.run(
        [
            "docker",
            "compose",
            "--project-name",
            compose_project,
            "ps",
            "--format",
            "{{.Service}} {{.Health}}",
        ],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.split("\n")
    health = dict(line.split(" ", 1) for line in states if line.strip())
    assert {health[name] for name in ("server", "agent", "postgres", "mysql")} == {"healthy"}
    assert httpx.get("http://127.0.0.1:3000/ready", timeout=5).status_code == 200
