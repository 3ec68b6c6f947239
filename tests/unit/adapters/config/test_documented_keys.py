"""The configuration references and the loaders agree, key for key.

docs/server.md §3 lists every key server.toml accepts and §3.3 the keys refused as "not
supported yet"; docs/agent.md §1.2-§1.5 list the agent's keys. These tests parse those
tables and hold the loaders to them: a key cannot be added without documenting it, every
documented key is accepted with a valid value, and every key documented as not supported
yet is refused with that message, naming the file and the key.
"""

from __future__ import annotations

import copy
import json
import re
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from adapters.config import agent as agent_config
from adapters.config import server as server_config
from domain.shared.errors import ConfigError
from tests.repo import REPO_ROOT

SERVER_DOC = REPO_ROOT / "docs" / "server.md"
AGENT_DOC = REPO_ROOT / "docs" / "agent.md"

_TOKEN = re.compile(r"`([^`]+)`")
_CELL_SEPARATOR = re.compile(r"(?<!\\)\|")


# --- reading the docs' tables ---------------------------------------------------------------


def _section(text: str, heading: str) -> str:
    """The text under `heading` (a whole line) up to the next heading of its level or above."""
    level = len(heading) - len(heading.lstrip("#"))
    lines = text.splitlines()
    start = lines.index(heading) + 1
    end = start
    while end < len(lines):
        line = lines[end]
        if line.startswith("#") and len(line) - len(line.lstrip("#")) <= level:
            break
        end += 1
    return "\n".join(lines[start:end])


def _first_table_key_cells(text: str) -> list[str]:
    """The first column of the first table in `text` whose header's first cell is `key`."""
    rows: list[str] = []
    in_table = False
    for line in text.splitlines():
        if not line.startswith("|"):
            if in_table:
                break
            continue
        cells = [cell.strip() for cell in _CELL_SEPARATOR.split(line)[1:-1]]
        if not in_table:
            in_table = cells[0] == "key"
            continue
        if not set(cells[0]) <= set("-: "):  # the |---| line
            rows.append(cells[0])
    assert rows, "no key table found"
    return rows


def _table_name(token: str) -> tuple[str, ...] | None:
    """`[[workflows.steps]]` → ("workflows", "steps"); `[databases.<db>.<env>]` uses `*`."""
    if not token.startswith("["):
        return None
    inner = token.strip("[]")
    return tuple("*" if part.startswith("<") else part for part in inner.split("."))


def _keys(cells: Iterable[str], table: tuple[str, ...] = ()) -> set[str]:
    """Dotted keys from a reference table's first column.

    A `[table]` or `[[table]]` token opens a table: the keys after it, in this row and in
    the rows below that open none, belong to it. A table named with no key after it in its
    row is itself the key (a whole table, as in the not-supported list).
    """
    keys: set[str] = set()
    for cell in cells:
        opened: tuple[str, ...] | None = None
        for token in _TOKEN.findall(cell):
            name = _table_name(token)
            if name is not None:
                if opened is not None:
                    keys.add(".".join(opened))
                table = opened = name
            else:
                keys.add(".".join((*table, token)))
                opened = None
        if opened is not None:
            keys.add(".".join(opened))
    return keys


def documented_server_keys() -> set[str]:
    text = SERVER_DOC.read_text(encoding="utf-8")
    reference = _section(text, "## 3. Configuration reference")
    return _keys(_first_table_key_cells(reference.split("\n### ", 1)[0]))


def documented_not_supported_keys() -> set[str]:
    text = SERVER_DOC.read_text(encoding="utf-8")
    return _keys(_first_table_key_cells(_section(text, "### 3.3 Not supported yet")))


def documented_agent_keys() -> set[str]:
    text = AGENT_DOC.read_text(encoding="utf-8")
    reference = _section(text, "## 1. Configuration reference")
    keys: set[str] = set()
    for part in reference.split("\n### ")[1:]:
        heading, _, body = part.partition("\n")
        if not re.search(r"^\|\s*key\s*\|", body, re.MULTILINE):
            continue  # a table of environment variables or of forms, not of keys
        tokens = [_table_name(token) for token in _TOKEN.findall(heading)]
        table = next((name for name in tokens if name is not None), ())
        keys |= _keys(_first_table_key_cells(body), table)
    return keys


def _leaf_keys(document: Any, prefix: tuple[str, ...] = (), named: Iterable[str] = ()) -> set[str]:
    """The dotted keys a parsed TOML document sets (arrays of tables transparent; the
    children of a table listed in `named` are names, shown as `*`)."""
    named = tuple(named)
    if isinstance(document, list) and document and all(isinstance(d, dict) for d in document):
        return set().union(*(_leaf_keys(d, prefix, named) for d in document))
    if isinstance(document, dict):
        is_named = ".".join(prefix) in named
        keys: set[str] = set()
        for key, value in document.items():
            keys |= _leaf_keys(value, (*prefix, "*" if is_named else key), named)
        return keys
    return {".".join(prefix)}


# --- writing configs ------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"


def _toml(document: dict[str, Any]) -> str:
    """A document as top-level keys with inline tables: any nesting, one line per key."""
    return "\n".join(f"{key} = {_toml_value(value)}" for key, value in document.items()) + "\n"


def _with_key(document: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A copy of `document` with dotted `key` set (into the first entry of an array of
    tables, creating missing tables)."""
    result = copy.deepcopy(document)
    node = result
    *tables, leaf = key.split(".")
    for name in tables:
        child = node.setdefault(name, {})
        node = child[0] if isinstance(child, list) else child
    node[leaf] = value
    return result


# --- the server -----------------------------------------------------------------------------

#: Every documented key, each with a valid value (not always the default).
SERVER_EVERY_KEY = """
state_dir = "state"
listen = "127.0.0.1:3001"
min_agent_version = "0.2.0"
allow_private_networks = true

[[databases]]
name = "app"
environments = ["staging", "production"]

[[workflows]]
database = "app"
environment = "production"
operations = ["execute_select", "execute_dml"]
require_reason = true
allow_self_approve = false
allow_same_approver_across_steps = true
explain = false
pending_ttl_secs = 3600
approved_ttl_secs = 7200
statement_timeout_secs = 20
[workflows.auto_approve]
mode = "risk_based"
risk = "low"
allow_read_only = true
allow_safe_ddl = false
max_estimated_rows = 5000
[[workflows.steps]]
type = "approval"
mode = "any"
[[workflows.steps.approvers]]
role = "dba"
min = 2
[[workflows.steps.approvers]]
group = "leads"
[[workflows.steps.approvers]]
user = "alice"

[[execution_policies]]
database = "app"
environment = "production"
max_executions = 2
execution_window_secs = 600
retry_on_failure = true
statement_timeout_secs = 30
max_statement_timeout_secs = 600
migration_statement_timeout_secs = 900
migration_lease_duration_secs = 1200
max_rows = 500

[[result_policies]]
database = "app"
environment = "production"
retention_days = 7
delivery_mode = "stream"
access = ["role:dba"]

[[sql_review]]
database = "app"
environment = "production"
no_where_delete = "block"
no_where_update = "warn"
drop_table = "warn"
truncate = "off"
drop_column = "block"
not_null_without_default = "warn"
create_index_not_concurrently = "off"
alter_column_type = "warn"
mixed_ddl_dml = "block"
large_in_list = "warn"
drop_index = "warn"
drop_view = "warn"
drop_sequence = "warn"
create_sequence = "block"

[auth]
default_role = "requester"
[[auth.roles]]
name = "dba"
permissions = ["request.view:any"]
databases = ["app"]
environments = ["production"]
[[auth.groups]]
name = "leads"
roles = ["dba"]
[auth.token_policy]
max_active_tokens_per_user = 3

[retention]
request_ttl_days = 10
audit_ttl_days = 20
result_ttl_days = 3
pending_ttl_secs = 60
approved_ttl_secs = 120
agent_ttl_days = 4

[audit]
redaction = "full"

[result_storage]
backend = "local"
root_dir = "results"
max_persist_bytes = 1024

[result_channel]
slot_ttl_secs = 30
max_slots = 5

[sweeps]
lease_reclaim_interval_secs = 1
dispatch_timeout_interval_secs = 2
ttl_expiry_interval_secs = 3
dispatch_timeout_secs = 60
record_purge_interval_secs = 600

[store]
url = "sqlite:///state/dbward.db"

[signing]
key_encryption_key_file = "kek"

[logging]
level = "debug"
format = "json"

[preflight]
max_concurrent_per_user = 2
max_explain_timeout_ms = 4000

[metrics]
listen = "127.0.0.1:9100"

[[webhooks]]
id = "ops"
url = "http://10.0.0.5/hooks"
format = "slack"
secret = "s3cret"
events = ["execution.*"]

[[notification_policies]]
database = "app"
environment = "production"
webhooks = ["ops"]
events = ["request.break_glass"]

[webhook_delivery]
max_attempts = 3
initial_backoff_secs = 1
max_backoff_secs = 60
timeout_secs = 5
"""

#: A valid config to add one refused key to; its workflow has an auto_approve table so a
#: key inside it is the only problem.
SERVER_MINIMAL: dict[str, Any] = {
    "state_dir": "state",
    "databases": [{"name": "app", "environments": ["production"]}],
    "workflows": [
        {
            "auto_approve": {"mode": "risk_based", "risk": "low"},
            "steps": [{"approvers": [{"role": "approver"}]}],
        }
    ],
}


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


class TestServerReference:
    def test_documented_keys_are_the_accepted_keys(self) -> None:
        documented = documented_server_keys()
        accepted = server_config.accepted_keys()
        assert not documented - accepted, "documented in docs/server.md §3 but not accepted"
        assert not accepted - documented, "accepted but missing from docs/server.md §3"

    def test_documented_not_supported_keys_are_the_refused_ones(self) -> None:
        documented = documented_not_supported_keys()
        refused = server_config.not_supported_keys()
        assert documented == refused
        assert not documented & server_config.accepted_keys()

    def test_the_sample_sets_every_documented_key(self) -> None:
        assert _leaf_keys(tomllib.loads(SERVER_EVERY_KEY)) == documented_server_keys()

    @pytest.mark.parametrize("key", sorted(documented_server_keys()))
    def test_every_documented_key_is_accepted(self, tmp_path: Path, key: str) -> None:
        # One document sets every key (some need the others: a step needs a workflow);
        # the parametrisation names the key a failure concerns.
        assert key in _leaf_keys(tomllib.loads(SERVER_EVERY_KEY))
        settings = server_config.load_server_settings(
            _write(tmp_path, "server.toml", SERVER_EVERY_KEY), {}
        )
        assert settings.listen == "127.0.0.1:3001"

    def test_the_minimal_config_loads(self, tmp_path: Path) -> None:
        path = _write(tmp_path, "server.toml", _toml(SERVER_MINIMAL))
        server_config.load_server_settings(path, {})

    @pytest.mark.parametrize("key", sorted(documented_not_supported_keys()))
    def test_every_not_supported_key_is_refused(self, tmp_path: Path, key: str) -> None:
        text = _toml(_with_key(SERVER_MINIMAL, key, "x"))
        path = _write(tmp_path, "server.toml", text)
        with pytest.raises(ConfigError) as caught:
            server_config.load_server_settings(path, {})
        (line,) = str(caught.value).splitlines()
        named, _, message = line.removeprefix(f"{path}: ").partition(": ")
        assert named.replace("[0]", "") == key
        assert "not supported yet" in message


# --- the agent ------------------------------------------------------------------------------

AGENT_EVERY_KEY = """
agent_id = "agent-1"
poll_interval_ms = 500
poll_wait_ms = 10000
heartbeat_interval_ms = 1000
lease_duration_secs = 60
drain_timeout_secs = 30
max_concurrent_tasks = 3
statement_timeout_secs = 20
operations = ["execute_select", "migrate_status"]
startup_retry_initial_ms = 100
startup_retry_max_ms = 1000
startup_max_wait_secs = 5
liveness_probe_path = "/tmp/alive"
readiness_probe_path = "/tmp/ready"
max_result_rows = 100
max_result_bytes = 4096
metrics_listen = "127.0.0.1:9464"
log_format = "json"

[schema_sync]
enabled = false
sync_on_startup = false
interval_secs = 600

[server]
url = "http://localhost:3000"
agent_token = "dbw_agent_token"
allow_insecure = false
public_key = "%s"

[databases.app.production]
url = "postgresql://app@db.internal/app"
migrations_dir = "migrations"
""" % ("ab" * 32)


class TestAgentReference:
    def test_documented_keys_are_the_accepted_keys(self) -> None:
        documented = documented_agent_keys()
        accepted = agent_config.accepted_keys()
        assert not documented - accepted, "documented in docs/agent.md §1 but not accepted"
        assert not accepted - documented, "accepted but missing from docs/agent.md §1"

    def test_the_sample_sets_every_documented_key(self) -> None:
        document = tomllib.loads(AGENT_EVERY_KEY)
        named = ("databases", "databases.*")
        assert _leaf_keys(document, named=named) == documented_agent_keys()

    def test_the_sample_loads(self, tmp_path: Path) -> None:
        settings = agent_config.load_agent_settings(
            _write(tmp_path, "agent.toml", AGENT_EVERY_KEY), {}
        )
        assert settings.agent_id == "agent-1"
