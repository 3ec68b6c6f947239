"""The agent config loader: defaults, strictness, `${VAR}` expansion, and one clear line per
problem naming the file and the key (docs/agent.md §5 improvement 6)."""

from __future__ import annotations

import os
import re
import socket
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from adapters.config.agent import is_local_host, load_agent_settings, render_effective_config
from application.agent.settings import AgentSettings, SchemaSyncSettings
from domain.shared.errors import ConfigError
from domain.shared.listen import ListenAddress
from domain.shared.operations import DEFAULT_OPERATIONS, Operation
from domain.shared.scopes import Scope
from tests.repo import REPO_ROOT

TOKEN = "dbw_0123456789abcdef0123456789abcdef"
ENV = {"DBWARD_AGENT_TOKEN": TOKEN}
EXAMPLE = REPO_ROOT / "examples" / "agent.toml"

SERVER_URL = "https://dbward.example.com"
DB_URL = "postgres://dbward:s3cret@db.example.com:5432/app"


def server(url: str = SERVER_URL, extra: str = "") -> str:
    return f'[server]\nurl = "{url}"\nagent_token = "${{DBWARD_AGENT_TOKEN}}"\n{extra}\n'


def database(db: str = "app", env: str = "production", url: str = DB_URL, extra: str = "") -> str:
    return f'[databases.{db}.{env}]\nurl = "{url}"\n{extra}\n'


def config(top: str = "", *, srv: str | None = None, dbs: str | None = None, more: str = "") -> str:
    """A valid config, with top-level keys, the server table or the databases replaced."""
    return "\n".join(
        [top, server() if srv is None else srv, database() if dbs is None else dbs, more]
    )


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> AgentSettings:
    return load_agent_settings(write(tmp_path, text), ENV if environ is None else environ)


def error_lines(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> list[str]:
    """Every line of the ConfigError, each checked to start with the file name."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_agent_settings(path, ENV if environ is None else environ)
    lines = str(caught.value).split("\n")
    for line in lines:
        assert line.startswith(f"{path}: "), line
    return [line.removeprefix(f"{path}: ") for line in lines]


def error(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> str:
    """The one line of the ConfigError, without the file name."""
    lines = error_lines(tmp_path, text, environ)
    assert len(lines) == 1, lines
    return lines[0]


# --- defaults -----------------------------------------------------------------------------


class TestDefaults:
    def test_every_default(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(socket, "gethostname", lambda: "host-1")
        settings = load(tmp_path, config())
        assert settings.agent_id == "host-1"
        assert settings.poll_interval_ms == 1000
        assert settings.poll_wait_ms == 20000
        assert settings.heartbeat_interval_ms == 2000
        assert settings.lease_duration_secs == 300
        assert settings.drain_timeout_secs == 60
        assert settings.max_concurrent_tasks == 2
        assert settings.statement_timeout_secs == 30
        assert settings.operations == DEFAULT_OPERATIONS
        assert Operation.MIGRATE_REPAIR not in settings.operations
        assert settings.operations_configured is False
        assert settings.startup_retry_initial_ms == 1000
        assert settings.startup_retry_max_ms == 15000
        assert settings.startup_max_wait_secs == 60
        assert settings.liveness_probe_path == "/tmp/dbward-agent-alive"
        assert settings.readiness_probe_path == "/tmp/dbward-agent-ready"
        assert settings.max_result_rows == 10000
        assert settings.max_result_bytes == 10485760
        assert settings.schema_sync == SchemaSyncSettings(
            enabled=True, sync_on_startup=True, interval_secs=0
        )
        assert settings.server.url == SERVER_URL
        assert settings.server.agent_token == TOKEN
        assert settings.server.allow_insecure is False
        assert settings.server.public_key is None
        (db,) = settings.databases
        assert db.scope == Scope("app", "production")
        assert db.url == DB_URL
        assert db.migrations_dir is None
        assert db.dialect == "postgresql"

    def test_agent_id_falls_back_to_unknown(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(socket, "gethostname", lambda: "")
        assert load(tmp_path, config()).agent_id == "unknown"

    def test_agent_id_when_hostname_fails(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def broken() -> str:
            raise OSError("no hostname")

        monkeypatch.setattr(socket, "gethostname", broken)
        assert load(tmp_path, config()).agent_id == "unknown"

    def test_every_key_set(self, tmp_path: Path) -> None:
        top = """
            agent_id = "prod-agent-1"
            poll_interval_ms = 500
            poll_wait_ms = 0
            heartbeat_interval_ms = 1000
            lease_duration_secs = 60
            drain_timeout_secs = 5
            max_concurrent_tasks = 0
            statement_timeout_secs = 0
            operations = ["migrate_repair", "execute_select"]
            startup_retry_initial_ms = 10
            startup_retry_max_ms = 10
            startup_max_wait_secs = 0
            liveness_probe_path = "/run/alive"
            readiness_probe_path = "/run/ready"
            max_result_rows = 1
            max_result_bytes = 1024
            [schema_sync]
            enabled = false
            sync_on_startup = false
            interval_secs = 3600
        """
        key = "AB" * 32
        settings = load(
            tmp_path,
            config(
                top.replace("    ", ""),
                srv=server(extra=f'allow_insecure = true\npublic_key = "{key}"'),
                dbs=database(extra='migrations_dir = "db/migrations"'),
            ),
        )
        assert settings == AgentSettings(
            server=replace(settings.server, allow_insecure=True, public_key=key.lower()),
            databases=settings.databases,
            agent_id="prod-agent-1",
            poll_interval_ms=500,
            poll_wait_ms=0,
            heartbeat_interval_ms=1000,
            lease_duration_secs=60,
            drain_timeout_secs=5,
            max_concurrent_tasks=0,
            statement_timeout_secs=0,
            operations=(Operation.MIGRATE_REPAIR, Operation.EXECUTE_SELECT),
            operations_configured=True,
            startup_retry_initial_ms=10,
            startup_retry_max_ms=10,
            startup_max_wait_secs=0,
            liveness_probe_path="/run/alive",
            readiness_probe_path="/run/ready",
            max_result_rows=1,
            max_result_bytes=1024,
            schema_sync=SchemaSyncSettings(False, False, 3600),
        )
        assert settings.server.public_key == "ab" * 32
        assert settings.databases[0].migrations_dir == "db/migrations"


# --- reading and parsing ------------------------------------------------------------------


class TestReading:
    def test_missing_file(self, tmp_path: Path) -> None:
        path = tmp_path / "absent.toml"
        with pytest.raises(ConfigError) as caught:
            load_agent_settings(path, ENV)
        assert str(caught.value) == f"{path}: cannot read config: No such file or directory"

    def test_directory(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match=r": cannot read config: Is a directory$"):
            load_agent_settings(tmp_path, ENV)

    def test_not_utf8(self, tmp_path: Path) -> None:
        path = tmp_path / "agent.toml"
        path.write_bytes(b'agent_id = "\xff"\n')
        with pytest.raises(ConfigError) as caught:
            load_agent_settings(path, ENV)
        assert str(caught.value) == f"{path}: cannot read config: not UTF-8 (byte 12)"

    def test_invalid_toml_names_line_and_column(self, tmp_path: Path) -> None:
        assert error(tmp_path, 'agent_id = "a"\n[server\n') == (
            "invalid TOML: Expected ']' at the end of a table declaration (at line 2, column 8)"
        )

    def test_environ_is_the_only_source(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setitem(os.environ, "DBWARD_AGENT_TOKEN", "from-process")
        monkeypatch.setitem(os.environ, "DBWARD_ALLOW_INSECURE", "1")
        assert error(tmp_path, config(), environ={}) == (
            "server.agent_token: undefined environment variable ${DBWARD_AGENT_TOKEN}; "
            "set it or write ${DBWARD_AGENT_TOKEN:-default}"
        )
        insecure = config(srv=server("http://dbward.example.com"))
        assert error(tmp_path, insecure).startswith("server.url: http:// to the non-local host")


# --- ${VAR} expansion ---------------------------------------------------------------------


class TestExpansion:
    def test_unset_variable_names_file_and_key(self, tmp_path: Path) -> None:
        path = tmp_path / "dbward-agent.toml"
        path.write_text(config(), encoding="utf-8")
        with pytest.raises(ConfigError) as caught:
            load_agent_settings(path, {})
        assert str(caught.value) == (
            f"{path}: server.agent_token: undefined environment variable "
            "${DBWARD_AGENT_TOKEN}; set it or write ${DBWARD_AGENT_TOKEN:-default}"
        )

    def test_default_when_unset(self, tmp_path: Path) -> None:
        dbs = database(url="${DATABASE_URL:-mysql://u@127.0.0.1:3306/w}")
        assert load(tmp_path, config(dbs=dbs)).databases[0].url == "mysql://u@127.0.0.1:3306/w"

    def test_default_when_empty_like_the_shell(self, tmp_path: Path) -> None:
        dbs = database(url="${DATABASE_URL:-mysql://u@127.0.0.1:3306/w}")
        settings = load(tmp_path, config(dbs=dbs), {**ENV, "DATABASE_URL": ""})
        assert settings.databases[0].url == "mysql://u@127.0.0.1:3306/w"

    def test_value_when_set(self, tmp_path: Path) -> None:
        dbs = database(url="${DATABASE_URL:-mysql://u@127.0.0.1:3306/w}")
        settings = load(tmp_path, config(dbs=dbs), {**ENV, "DATABASE_URL": DB_URL})
        assert settings.databases[0].url == DB_URL

    def test_escape_is_a_literal(self, tmp_path: Path) -> None:
        settings = load(tmp_path, config('agent_id = "agent-$${HOSTNAME}"'))
        assert settings.agent_id == "agent-${HOSTNAME}"

    def test_comments_are_not_expanded(self, tmp_path: Path) -> None:
        text = "# ${UNDEFINED}\n" + config('agent_id = "a"  # ${ALSO_UNDEFINED} ${')
        assert load(tmp_path, text, ENV).agent_id == "a"

    def test_values_with_quotes_cannot_break_the_toml(self, tmp_path: Path) -> None:
        settings = load(tmp_path, config('agent_id = "${ID}"'), {**ENV, "ID": 'a"b\\c'})
        assert settings.agent_id == 'a"b\\c'

    def test_keys_are_not_expanded(self, tmp_path: Path) -> None:
        assert error(tmp_path, config('"${X}" = 1'), {**ENV, "X": "agent_id"}) == (
            '"${X}": unknown key (valid keys here: agent_id, poll_interval_ms, poll_wait_ms, '
            "heartbeat_interval_ms, lease_duration_secs, drain_timeout_secs, "
            "max_concurrent_tasks, statement_timeout_secs, operations, startup_retry_initial_ms, "
            "startup_retry_max_ms, startup_max_wait_secs, liveness_probe_path, "
            "readiness_probe_path, max_result_rows, max_result_bytes, schema_sync, metrics_listen, "
            "log_format, server, "
            "databases)"
        )

    def test_expanded_inside_arrays(self, tmp_path: Path) -> None:
        settings = load(tmp_path, config('operations = ["${OP:-migrate_status}"]'))
        assert settings.operations == (Operation.MIGRATE_STATUS,)

    def test_expansion_happens_before_validation(self, tmp_path: Path) -> None:
        text = config('operations = ["${OP}"]')
        assert error(tmp_path, text, {**ENV, "OP": "query"}) == (
            'operations[0]: "query" is an alias; use the canonical name execute_select'
        )

    def test_nested_default(self, tmp_path: Path) -> None:
        dbs = database(url="${DATABASE_URL:-${FALLBACK}}")
        assert error(tmp_path, config(dbs=dbs)) == (
            "databases.app.production.url: nested ${ in the default of ${DATABASE_URL:-...} "
            "is not supported"
        )

    def test_unclosed(self, tmp_path: Path) -> None:
        assert error(tmp_path, config('agent_id = "${HOST"')) == (
            "agent_id: unclosed ${ at character 1: add the closing } "
            "(or write $${ for a literal ${)"
        )

    def test_bad_name(self, tmp_path: Path) -> None:
        assert error(tmp_path, config('agent_id = "${1X}"')) == (
            "agent_id: malformed ${1X}: not a valid variable name "
            "(use letters, digits and _, not starting with a digit)"
        )

    def test_every_expansion_problem_is_listed(self, tmp_path: Path) -> None:
        text = config('agent_id = "${A}"', dbs=database(url="${B}"))
        assert error_lines(tmp_path, text, {}) == [
            "agent_id: undefined environment variable ${A}; set it or write ${A:-default}",
            "server.agent_token: undefined environment variable ${DBWARD_AGENT_TOKEN}; "
            "set it or write ${DBWARD_AGENT_TOKEN:-default}",
            "databases.app.production.url: undefined environment variable ${B}; "
            "set it or write ${B:-default}",
        ]


# --- unknown keys and wrong types ---------------------------------------------------------


class TestStrictShape:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (
                config("poll_intervall_ms = 5"),
                "poll_intervall_ms: unknown key (did you mean poll_interval_ms?)",
            ),
            (
                config(srv=server(extra='agent_tokn = "x"')),
                "server.agent_tokn: unknown key (did you mean agent_token?)",
            ),
            (
                config(more="[schema_sync]\nenable = false"),
                "schema_sync.enable: unknown key (did you mean enabled?)",
            ),
            (
                config(dbs=database(extra='migration_dir = "x"')),
                "databases.app.production.migration_dir: unknown key "
                "(did you mean migrations_dir?)",
            ),
            (
                config(more="[schema_sink]\nenabled = false"),
                "schema_sink: unknown key (did you mean schema_sync?)",
            ),
            (
                config(srv=server(extra="xyz = 1")),
                "server.xyz: unknown key "
                "(valid keys here: url, agent_token, allow_insecure, public_key)",
            ),
        ],
    )
    def test_unknown_key_names_the_nearest(self, tmp_path: Path, text: str, expected: str) -> None:
        assert error(tmp_path, text) == expected

    def test_lease_duration_is_a_real_key_here(self, tmp_path: Path) -> None:
        assert load(tmp_path, config("lease_duration_secs = 30")).lease_duration_secs == 30

    @pytest.mark.parametrize(
        ("top", "expected"),
        [
            (
                'max_concurrent_tasks = "2"',
                'max_concurrent_tasks: expected an integer, got string "2"',
            ),
            ("poll_interval_ms = true", "poll_interval_ms: expected an integer, got boolean true"),
            ("poll_interval_ms = 2.0", "poll_interval_ms: expected an integer, got float 2.0"),
            ("agent_id = 7", "agent_id: expected a string, got integer 7"),
            (
                'operations = "execute_select"',
                'operations: expected an array, got string "execute_select"',
            ),
            ("operations = [1]", "operations[0]: expected a string, got integer 1"),
            (
                "liveness_probe_path = 1979-05-27",
                "liveness_probe_path: expected a string, got date/time 1979-05-27",
            ),
            ("schema_sync = 1", "schema_sync: expected a table, got integer 1"),
        ],
    )
    def test_wrong_top_level_type(self, tmp_path: Path, top: str, expected: str) -> None:
        assert error(tmp_path, config(top)) == expected

    def test_bool_must_be_a_bool(self, tmp_path: Path) -> None:
        text = config(more='[schema_sync]\nenabled = "yes"')
        assert (
            error(tmp_path, text) == 'schema_sync.enabled: expected true or false, got string "yes"'
        )

    def test_bool_is_not_an_integer_either(self, tmp_path: Path) -> None:
        text = config(srv=server(extra="allow_insecure = 1"))
        assert error(tmp_path, text) == (
            "server.allow_insecure: expected true or false, got integer 1"
        )

    def test_wrong_type_never_echoes_a_secret(self, tmp_path: Path) -> None:
        text = config(dbs='[databases.app]\nproduction = "postgres://u:hunter2@h/db"\n')
        message = error(tmp_path, text)
        assert "hunter2" not in message
        assert message == (
            "databases.app.production: expected a table, got string (value hidden); "
            "databases are tables named [databases.<database>.<environment>]"
        )

    def test_database_url_must_be_a_string(self, tmp_path: Path) -> None:
        text = config(dbs="[databases.app.production]\nurl = 5\n")
        assert error(tmp_path, text) == (
            "databases.app.production.url: expected a string, got integer 5"
        )

    def test_server_must_be_a_table(self, tmp_path: Path) -> None:
        text = config('server = "https://dbward.example.com"', srv="")
        assert error(tmp_path, text) == (
            'server: expected a table, got string "https://dbward.example.com"'
        )

    def test_several_problems_one_line_each(self, tmp_path: Path) -> None:
        text = config('poll_wait_ms = -1\nmax_result_rows = "10"\nagentid = "x"')
        assert error_lines(tmp_path, text) == [
            "poll_wait_ms: must be at least 0, got integer -1",
            'max_result_rows: expected an integer, got string "10"',
            "agentid: unknown key (did you mean agent_id?)",
        ]

    def test_no_pydantic_text_leaks(self, tmp_path: Path) -> None:
        lines = error_lines(tmp_path, config('poll_wait_ms = "x"\nfoo = 1', srv="[server]"))
        text = "\n".join(lines)
        for leak in ("pydantic", "validation error", "Input should", "type=", "errors.pydantic"):
            assert leak not in text


class TestRanges:
    @pytest.mark.parametrize(
        ("key", "lowest"),
        [
            ("poll_interval_ms", 1),
            ("poll_wait_ms", 0),
            ("heartbeat_interval_ms", 100),
            ("lease_duration_secs", 10),
            ("drain_timeout_secs", 0),
            ("max_concurrent_tasks", 0),
            ("statement_timeout_secs", 0),
            ("startup_retry_initial_ms", 1),
            ("startup_max_wait_secs", 0),
            ("max_result_rows", 1),
            ("max_result_bytes", 1024),
        ],
    )
    def test_lowest_value(self, tmp_path: Path, key: str, lowest: int) -> None:
        assert getattr(load(tmp_path, config(f"{key} = {lowest}")), key) == lowest
        assert error(tmp_path, config(f"{key} = {lowest - 1}")) == (
            f"{key}: must be at least {lowest}, got integer {lowest - 1}"
        )

    def test_poll_wait_ceiling(self, tmp_path: Path) -> None:
        assert load(tmp_path, config("poll_wait_ms = 60000")).poll_wait_ms == 60000
        assert error(tmp_path, config("poll_wait_ms = 60001")) == (
            "poll_wait_ms: must be at most 60000, got integer 60001"
        )

    def test_schema_sync_interval(self, tmp_path: Path) -> None:
        assert error(tmp_path, config(more="[schema_sync]\ninterval_secs = -5")) == (
            "schema_sync.interval_secs: must be at least 0, got integer -5"
        )

    def test_heartbeat_must_fit_three_times_in_a_lease(self, tmp_path: Path) -> None:
        ok = config("lease_duration_secs = 10\nheartbeat_interval_ms = 3333")
        assert load(tmp_path, ok).heartbeat_interval_ms == 3333
        bad = config("lease_duration_secs = 10\nheartbeat_interval_ms = 3334")
        assert error(tmp_path, bad) == (
            "heartbeat_interval_ms: must be less than lease_duration_secs*1000/3 (3333 ms), "
            "got 3334: three heartbeats must fit in a lease, so one lost heartbeat does not "
            "lose the job"
        )

    def test_retry_cap_not_below_initial_delay(self, tmp_path: Path) -> None:
        text = config("startup_retry_initial_ms = 2000\nstartup_retry_max_ms = 1000")
        assert error(tmp_path, text) == (
            "startup_retry_max_ms: must be at least startup_retry_initial_ms (2000), got 1000"
        )

    def test_retry_cap_below_the_default_initial_delay(self, tmp_path: Path) -> None:
        assert error(tmp_path, config("startup_retry_max_ms = 999")) == (
            "startup_retry_max_ms: must be at least startup_retry_initial_ms (1000), got 999"
        )

    @pytest.mark.parametrize("key", ["agent_id", "liveness_probe_path", "readiness_probe_path"])
    def test_empty_strings_refused(self, tmp_path: Path, key: str) -> None:
        assert error(tmp_path, config(f'{key} = ""')) == f"{key}: must not be empty"


# --- operations ---------------------------------------------------------------------------


class TestOperations:
    def test_canonical_names(self, tmp_path: Path) -> None:
        settings = load(tmp_path, config('operations = ["execute_select", "migrate_repair"]'))
        assert settings.operations == (Operation.EXECUTE_SELECT, Operation.MIGRATE_REPAIR)
        assert settings.operations_configured is True

    def test_duplicates_removed_in_order(self, tmp_path: Path) -> None:
        text = config('operations = ["execute_dml", "execute_select", "execute_dml"]')
        assert load(tmp_path, text).operations == (
            Operation.EXECUTE_DML,
            Operation.EXECUTE_SELECT,
        )

    def test_listing_the_defaults_still_counts_as_configured(self, tmp_path: Path) -> None:
        names = ", ".join(f'"{op.value}"' for op in DEFAULT_OPERATIONS)
        settings = load(tmp_path, config(f"operations = [{names}]"))
        assert settings.operations == DEFAULT_OPERATIONS
        assert settings.operations_configured is True

    @pytest.mark.parametrize(
        ("alias", "canonical"),
        [
            ("execute_query", "execute_select"),
            ("execute", "execute_select"),
            ("query", "execute_select"),
        ],
    )
    def test_alias_rejected(self, tmp_path: Path, alias: str, canonical: str) -> None:
        text = config(f'operations = ["execute_dml", "{alias}"]')
        assert error(tmp_path, text) == (
            f'operations[1]: "{alias}" is an alias; use the canonical name {canonical}'
        )

    def test_unknown_lists_valid_names(self, tmp_path: Path) -> None:
        assert error(tmp_path, config('operations = ["drop_database"]')) == (
            'operations[0]: unknown operation "drop_database"; valid: execute_select, '
            "execute_dml, migrate_up, migrate_down, migrate_status, migrate_repair"
        )

    def test_unknown_suggests_the_nearest(self, tmp_path: Path) -> None:
        assert error(tmp_path, config('operations = ["migrate_upp"]')).startswith(
            'operations[0]: unknown operation "migrate_upp" (did you mean migrate_up?); valid: '
        )

    def test_names_are_case_sensitive(self, tmp_path: Path) -> None:
        assert "unknown operation" in error(tmp_path, config('operations = ["EXECUTE_SELECT"]'))

    def test_empty_list(self, tmp_path: Path) -> None:
        assert error(tmp_path, config("operations = []")) == (
            "operations: empty list; remove the key for the defaults, "
            "or set max_concurrent_tasks = 0 to take no jobs"
        )


# --- [server] -----------------------------------------------------------------------------


class TestServer:
    def test_server_table_required(self, tmp_path: Path) -> None:
        assert error(tmp_path, config(srv="")) == (
            "server: required table is missing; add [server] with url and agent_token"
        )

    def test_url_required(self, tmp_path: Path) -> None:
        text = config(srv='[server]\nagent_token = "t"')
        assert error(tmp_path, text) == "server.url: required key is missing"

    def test_token_required(self, tmp_path: Path) -> None:
        text = config(srv='[server]\nurl = "https://dbward.example.com"')
        assert error(tmp_path, text) == "server.agent_token: required key is missing"

    def test_token_not_empty(self, tmp_path: Path) -> None:
        settings_env = {"DBWARD_AGENT_TOKEN": ""}
        assert error(tmp_path, config(), settings_env) == "server.agent_token: must not be empty"

    @pytest.mark.parametrize(
        "url", ["ftp://dbward.example.com", "dbward.example.com:3000", "HTTPS://dbward.example.com"]
    )
    def test_scheme_must_be_http_or_https(self, tmp_path: Path, url: str) -> None:
        assert error(tmp_path, config(srv=server(url))) == (
            f'server.url: must start with http:// or https://, got string "{url}"'
        )

    def test_url_needs_a_host(self, tmp_path: Path) -> None:
        assert error(tmp_path, config(srv=server("https:///api"))) == (
            'server.url: has no host, got string "https:///api"'
        )

    def test_bad_port(self, tmp_path: Path) -> None:
        assert error(tmp_path, config(srv=server("https://h.example.com:99999"))).startswith(
            "server.url: not a valid URL ("
        )

    def test_https_to_a_public_host(self, tmp_path: Path) -> None:
        settings = load(tmp_path, config(srv=server("https://dbward.example.com:3000")))
        assert settings.server.url == "https://dbward.example.com:3000"

    def test_http_to_a_public_host_refused(self, tmp_path: Path) -> None:
        assert error(tmp_path, config(srv=server("http://dbward.example.com:3000"))) == (
            "server.url: http:// to the non-local host dbward.example.com would send the agent "
            "token in cleartext; use https://, or set server.allow_insecure = true "
            "(or DBWARD_ALLOW_INSECURE=1)"
        )

    def test_http_allowed_by_config(self, tmp_path: Path) -> None:
        text = config(srv=server("http://dbward.example.com", "allow_insecure = true"))
        assert load(tmp_path, text).server.allow_insecure is True

    @pytest.mark.parametrize("value", ["1", "true"])
    def test_http_allowed_by_environment(self, tmp_path: Path, value: str) -> None:
        text = config(srv=server("http://dbward.example.com"))
        settings = load(tmp_path, text, {**ENV, "DBWARD_ALLOW_INSECURE": value})
        assert settings.server.allow_insecure is True

    @pytest.mark.parametrize("value", ["0", "false", "", "yes", "TRUE"])
    def test_environment_overrides_config_true(self, tmp_path: Path, value: str) -> None:
        text = config(srv=server("http://dbward.example.com", "allow_insecure = true"))
        assert error(tmp_path, text, {**ENV, "DBWARD_ALLOW_INSECURE": value}) == (
            "server.url: http:// to the non-local host dbward.example.com would send the agent "
            "token in cleartext; use https://, or set server.allow_insecure = true "
            f"(or DBWARD_ALLOW_INSECURE=1); DBWARD_ALLOW_INSECURE={value} overrides "
            "server.allow_insecure"
        )

    def test_environment_override_is_the_effective_value(self, tmp_path: Path) -> None:
        text = config(srv=server(extra="allow_insecure = true"))
        settings = load(tmp_path, text, {**ENV, "DBWARD_ALLOW_INSECURE": "0"})
        assert settings.server.allow_insecure is False

    @pytest.mark.parametrize(
        "url",
        [
            "http://localhost:3000",
            "http://LOCALHOST",
            "http://127.0.0.1:3000",
            "http://127.8.9.10",
            "http://[::1]:3000",
            "http://0.0.0.0:3000",
            "http://10.1.2.3",
            "http://172.16.0.1",
            "http://172.31.255.255",
            "http://192.168.1.10",
            "http://169.254.169.254",
            "http://[fd12::1]",
            "http://[fe80::1]",
            "http://[::ffff:10.0.0.1]",
            "http://dbward.prod.svc.cluster.local:3000",
            "http://dbward.internal",
            "http://dbward.corp.internal",
            "http://dbward:3000",
        ],
    )
    def test_http_to_a_local_host_allowed(self, tmp_path: Path, url: str) -> None:
        assert load(tmp_path, config(srv=server(url))).server.allow_insecure is False

    @pytest.mark.parametrize(
        "host",
        [
            "dbward.example.com",
            "8.8.8.8",
            "172.32.0.1",
            "[2001:4860::1]",
            "localhost.example.com",
            "internal.example.com",
            "svc.cluster.local.example.com",
        ],
    )
    def test_http_to_a_public_host_refused_for_each_kind(self, tmp_path: Path, host: str) -> None:
        assert "non-local host" in error(tmp_path, config(srv=server(f"http://{host}")))

    def test_is_local_host(self) -> None:
        assert is_local_host("localhost.")
        assert is_local_host("[::1]")
        assert not is_local_host("")
        assert not is_local_host("example.com")

    def test_public_key_pinned_and_lowercased(self, tmp_path: Path) -> None:
        key = "0123456789ABCDEF" * 4
        text = config(srv=server(extra=f'public_key = "{key}"'))
        assert load(tmp_path, text).server.public_key == key.lower()

    @pytest.mark.parametrize("key", ["abc", "g" * 64, "a" * 63, "a" * 65])
    def test_public_key_must_be_64_hex(self, tmp_path: Path, key: str) -> None:
        text = config(srv=server(extra=f'public_key = "{key}"'))
        assert error(tmp_path, text) == (
            "server.public_key: expected the server's Ed25519 public key as 64 hex characters, "
            f"got {len(key)} characters"
        )


# --- [databases] --------------------------------------------------------------------------


class TestDatabases:
    def test_at_least_one_database(self, tmp_path: Path) -> None:
        assert error(tmp_path, config(dbs="")) == (
            "databases: required table is missing; "
            "add [databases.<database>.<environment>] with a url"
        )

    def test_empty_databases_table(self, tmp_path: Path) -> None:
        assert error(tmp_path, config(dbs="[databases]")) == (
            "databases: at least one database is required; "
            "add [databases.<database>.<environment>] with a url"
        )

    def test_database_without_environment(self, tmp_path: Path) -> None:
        assert error(tmp_path, config(dbs="[databases.app]")) == (
            "databases.app: no environments; add [databases.app.<environment>]"
        )

    def test_url_required(self, tmp_path: Path) -> None:
        text = config(dbs='[databases.app.production]\nmigrations_dir = "m"')
        assert error(tmp_path, text) == "databases.app.production.url: required key is missing"

    @pytest.mark.parametrize(
        ("url", "dialect"),
        [
            ("postgres://u@h/db", "postgresql"),
            ("postgresql://u@h/db", "postgresql"),
            ("mysql://u@h/db", "mysql"),
        ],
    )
    def test_supported_schemes(self, tmp_path: Path, url: str, dialect: str) -> None:
        assert load(tmp_path, config(dbs=database(url=url))).databases[0].dialect == dialect

    @pytest.mark.parametrize(
        ("url", "got"),
        [
            ("sqlite://u:hunter2@h/db", '"sqlite://"'),
            ("mariadb://u:hunter2@h/db", '"mariadb://"'),
            ("Postgres://u:hunter2@h/db", '"Postgres://"'),
            ("u:hunter2@h/db", "no scheme"),
            ("", "no scheme"),
        ],
    )
    def test_unsupported_scheme(self, tmp_path: Path, url: str, got: str) -> None:
        message = error(tmp_path, config(dbs=database(url=url)))
        assert message == (
            f"databases.app.production.url: unsupported URL scheme {got}; "
            "supported: postgres://, postgresql://, mysql://"
        )
        assert "hunter2" not in message

    @pytest.mark.parametrize(
        ("dbs", "expected"),
        [
            (
                database(db="App"),
                "databases.App: invalid database name 'App': use 1-63 characters of a-z, "
                "0-9, '_' or '-', starting with a letter",
            ),
            (
                database(env="Prod"),
                "databases.app.Prod: invalid environment name 'Prod': use 1-63 characters of "
                "a-z, 0-9, '_' or '-', starting with a letter",
            ),
            (
                database(db='"1app"'),
                "databases.1app: invalid database name '1app': use 1-63 characters of a-z, "
                "0-9, '_' or '-', starting with a letter",
            ),
            (
                database(env='"*"'),
                "databases.app.\"*\": invalid environment name '*': use 1-63 characters of "
                "a-z, 0-9, '_' or '-', starting with a letter",
            ),
            (
                database(db='"app\\n"'),
                "databases.\"app\\n\": invalid database name 'app\\n': use 1-63 characters "
                "of a-z, 0-9, '_' or '-', starting with a letter",
            ),
        ],
    )
    def test_scope_names_validated(self, tmp_path: Path, dbs: str, expected: str) -> None:
        assert error(tmp_path, config(dbs=dbs)) == expected

    def test_sorted_by_database_then_environment(self, tmp_path: Path) -> None:
        dbs = "".join(
            database(db, env)
            for db, env in [("web", "staging"), ("app", "staging"), ("web", "dev"), ("app", "prod")]
        )
        settings = load(tmp_path, config(dbs=dbs))
        assert settings.scopes == (
            Scope("app", "prod"),
            Scope("app", "staging"),
            Scope("web", "dev"),
            Scope("web", "staging"),
        )

    def test_migrations_dir(self, tmp_path: Path) -> None:
        text = config(dbs=database(extra='migrations_dir = "db/migrations"'))
        assert load(tmp_path, text).databases[0].migrations_dir == "db/migrations"


# --- the example file ---------------------------------------------------------------------


class TestExample:
    def test_loads_with_only_the_token(self) -> None:
        settings = load_agent_settings(EXAMPLE, {"DBWARD_AGENT_TOKEN": TOKEN})
        assert settings.server.url == "http://127.0.0.1:3000"
        assert settings.server.agent_token == TOKEN
        assert settings.databases[0].url == "postgres://dbward@127.0.0.1:5432/app"
        assert settings.operations_configured is False

    def test_needs_the_token(self) -> None:
        with pytest.raises(ConfigError, match=r"server\.agent_token: undefined environment"):
            load_agent_settings(EXAMPLE, {})

    def test_database_url_from_environment(self) -> None:
        environ = {"DBWARD_AGENT_TOKEN": TOKEN, "DATABASE_URL": "mysql://u:p@db:3306/app"}
        settings = load_agent_settings(EXAMPLE, environ)
        assert settings.databases[0].url == "mysql://u:p@db:3306/app"

    def test_commented_settings_name_real_keys(self, tmp_path: Path) -> None:
        """Uncommenting every `# key = value` line of the example must still load."""
        lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
        setting = re.compile(r"^# ?(\[[a-z_.]+\]|[a-z_]+ = .*)$")
        uncommented = [match.group(1) if (match := setting.match(line)) else line for line in lines]
        text = "\n".join(uncommented).replace('public_key = "..."', f'public_key = "{"a" * 64}"')
        assert sum(1 for line in lines if setting.match(line)) >= 20
        settings = load(tmp_path, text)
        assert len(settings.databases) == 2


# --- render_effective_config --------------------------------------------------------------


class TestRender:
    def render(self, tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> str:
        return render_effective_config(load(tmp_path, text, environ))

    def test_parses_with_tomllib_and_lists_every_key(self, tmp_path: Path) -> None:
        settings = load(tmp_path, config())
        text = render_effective_config(settings)
        document = tomllib.loads(text)
        assert document["poll_wait_ms"] == 20000
        assert document["statement_timeout_secs"] == 30
        assert document["operations"] == [op.value for op in DEFAULT_OPERATIONS]
        assert document["liveness_probe_path"] == "/tmp/dbward-agent-alive"
        assert document["max_result_bytes"] == 10485760
        assert document["schema_sync"] == {
            "enabled": True,
            "sync_on_startup": True,
            "interval_secs": 0,
        }
        assert document["server"] == {
            "url": SERVER_URL,
            "agent_token": "dbw_0123...redacted",
            "allow_insecure": False,
        }
        assert document["databases"] == {
            "app": {"production": {"url": "postgres://dbward:***@db.example.com:5432/app"}}
        }
        # TOML has no null: an unset metrics_listen is a comment.
        top_level = {
            name
            for name in AgentSettings.__dataclass_fields__
            if name not in {"operations_configured", "metrics_listen"}
        }
        assert set(document) == top_level
        assert "# metrics_listen: not set (no metrics served)" in text

    def test_secrets_never_appear(self, tmp_path: Path) -> None:
        dbs = database(url="postgresql://admin:hunter2@db:5432/app?sslmode=require&password=pw2")
        rendered = self.render(tmp_path, config(dbs=dbs))
        assert TOKEN not in rendered
        assert "hunter2" not in rendered
        assert "pw2" not in rendered
        document = tomllib.loads(rendered)
        assert document["databases"]["app"]["production"]["url"] == (
            "postgresql://admin:***@db:5432/app?sslmode=require&password=***"
        )

    @pytest.mark.parametrize(
        ("token", "shown"),
        [
            (TOKEN, "dbw_0123...redacted"),
            ("some-other-secret-token-value", "<redacted>"),
            ("dbw_abc", "<redacted>"),
        ],
    )
    def test_token_redaction(self, tmp_path: Path, token: str, shown: str) -> None:
        rendered = self.render(tmp_path, config(), {"DBWARD_AGENT_TOKEN": token})
        assert tomllib.loads(rendered)["server"]["agent_token"] == shown
        assert token not in rendered

    def test_url_without_password_unchanged(self, tmp_path: Path) -> None:
        url = "mysql://reader@db.internal:3306/w?charset=utf8mb4"
        document = tomllib.loads(self.render(tmp_path, config(dbs=database(url=url))))
        assert document["databases"]["app"]["production"]["url"] == url

    def test_encoded_user_and_password(self, tmp_path: Path) -> None:
        url = "postgres://us%40er:p%3Ass@db:5432/app"
        document = tomllib.loads(self.render(tmp_path, config(dbs=database(url=url))))
        assert document["databases"]["app"]["production"]["url"] == (
            "postgres://us%40er:***@db:5432/app"
        )

    def test_loads_back_to_the_same_settings(self, tmp_path: Path) -> None:
        text = config(
            'agent_id = "a\\"b\\\\c\\t$${HOME}"\noperations = ["migrate_status", "execute_dml"]\n'
            "max_result_rows = 5",
            srv=server(extra=f'public_key = "{"c" * 64}"'),
            dbs=database(extra='migrations_dir = "m"') + database("web", "dev", "mysql://u@h/w"),
        )
        original = load(tmp_path, text)
        rendered = render_effective_config(original)
        (tmp_path / "rendered").mkdir()
        reloaded = load(tmp_path / "rendered", rendered)
        assert reloaded.agent_id == 'a"b\\c\t${HOME}'
        assert reloaded == replace(
            original,
            server=replace(original.server, agent_token="dbw_0123...redacted"),
            databases=(
                replace(original.databases[0], url="postgres://dbward:***@db.example.com:5432/app"),
                original.databases[1],
            ),
        )

    def test_optional_values_shown_when_set(self, tmp_path: Path) -> None:
        text = config(
            srv=server(extra=f'public_key = "{"d" * 64}"'),
            dbs=database(extra='migrations_dir = "db/migrations"'),
        )
        document = tomllib.loads(self.render(tmp_path, text))
        assert document["server"]["public_key"] == "d" * 64
        assert document["databases"]["app"]["production"]["migrations_dir"] == "db/migrations"

    def test_control_characters_escaped(self, tmp_path: Path) -> None:
        text = config('agent_id = "x\\u0001\\u007f"')
        document = tomllib.loads(self.render(tmp_path, text))
        assert document["agent_id"] == "x\x01\x7f"


class TestMetricsAndLogFormat:
    def test_metrics_listen_is_read_and_rendered_back(self, tmp_path: Path) -> None:
        settings = load(tmp_path, config('metrics_listen = "[::1]:9464"'))
        assert settings.metrics_listen == ListenAddress("::1", 9464)
        assert 'metrics_listen = "[::1]:9464"' in render_effective_config(settings)

    @pytest.mark.parametrize("value", ["9464", "localhost", "::1:9464", "host:0", "host:70000"])
    def test_a_malformed_metrics_listen_is_refused(self, tmp_path: Path, value: str) -> None:
        message = error(tmp_path, config(f'metrics_listen = "{value}"'))
        assert message.startswith('metrics_listen: expected "host:port"')

    def test_log_format_json_is_accepted(self, tmp_path: Path) -> None:
        assert load(tmp_path, config('log_format = "json"')).log_format == "json"

    def test_an_unknown_log_format_is_refused(self, tmp_path: Path) -> None:
        message = error(tmp_path, config('log_format = "yaml"'))
        assert message == 'log_format: expected "text" or "json", got \'yaml\''
