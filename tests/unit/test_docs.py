"""docs/agent.md maps behaviours to tests: every test it names must exist."""

from __future__ import annotations

import re

from tests.repo import REPO_ROOT

ROOT = REPO_ROOT
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)?(?:::(\w+))?`")


def test_every_test_named_in_the_agent_docs_exists() -> None:
    text = (ROOT / "docs" / "agent.md").read_text()
    table = text[text.index("| behaviour | proved by |") :]
    current: str | None = None
    missing: list[str] = []
    named = 0
    for match in REFERENCE.finditer(table):
        path, function = match.groups()
        if path:
            current = path
        if current is None or not (path or function):
            continue
        named += 1
        source = ROOT / current
        if not source.exists():
            missing.append(current)
        elif function and not re.search(rf"^def {function}\b", source.read_text(), re.M):
            missing.append(f"{current}::{function}")
    assert named > 50
    assert missing == []
