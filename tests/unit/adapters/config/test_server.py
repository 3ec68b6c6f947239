"""The server config loader: defaults, strictness, `${VAR}` expansion, every validation rule,
and one clear line per problem naming the file and the key (docs/agent.md §5 improvement 6,
applied to server.toml)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from adapters.config.server import load_server_settings
from application.server.settings import (
    AuditRedaction,
    AuthSettings,
    CustomRoleSettings,
    DatabaseRegistration,
    GroupSettings,
    LogFormat,
    LoggingSettings,
    ResultChannelSettings,
    ResultStorageSettings,
    RetentionSettings,
    ServerSettings,
    StoreSettings,
    SweepSettings,
    TokenPolicySettings,
)
from domain.server.execution_policies import DeliveryMode, ExecutionPolicy, ResultPolicy
from domain.server.rbac import Selector, SelectorKind
from domain.server.review_rules import ReviewRule, RuleAction
from domain.server.workflows import (
    ApprovalStep,
    Approver,
    AutoApprove,
    AutoApproveMode,
    RiskLevel,
    StepMode,
    Workflow,
)
from domain.shared.errors import ConfigError
from domain.shared.listen import ListenAddress
from domain.shared.operations import Operation
from domain.shared.scopes import Scope
from tests.repo import REPO_ROOT

EXAMPLE = REPO_ROOT / "examples" / "server.toml"

BASE = """
state_dir = "state"
[[databases]]
name = "app"
environments = ["staging", "production"]
"""

WORKFLOW = """
[[workflows]]
database = "app"
environment = "production"
[[workflows.steps]]
[[workflows.steps.approvers]]
role = "approver"
"""


def config(*parts: str, base: str = BASE) -> str:
    return "\n".join(textwrap.dedent(part) for part in (base, *parts))


def top(line: str, *parts: str) -> str:
    """A config with a top-level key (it must come before the first table)."""
    return config(WORKFLOW, *parts, base=f"{line}\n{BASE}")


def workflow_with(line: str) -> str:
    """WORKFLOW with one more key in its [[workflows]] table."""
    return WORKFLOW.replace("[[workflows.steps]]", f"{line}\n[[workflows.steps]]", 1)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "server.toml"
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> ServerSettings:
    return load_server_settings(write(tmp_path, text), environ or {})


def error_lines(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> list[str]:
    """Every line of the ConfigError, each checked to start with the file name."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_server_settings(path, environ or {})
    lines = str(caught.value).split("\n")
    for line in lines:
        assert line.startswith(f"{path}: "), line
    return [line.removeprefix(f"{path}: ") for line in lines]


def error(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> str:
    lines = error_lines(tmp_path, text, environ)
    assert len(lines) == 1, lines
    return lines[0]


def warnings(settings: ServerSettings, tmp_path: Path) -> list[str]:
    prefix = f"{tmp_path / 'server.toml'}: "
    for line in settings.warnings:
        assert line.startswith(prefix), line
    return [line.removeprefix(prefix) for line in settings.warnings]


# --- defaults -----------------------------------------------------------------------------


class TestDefaults:
    def test_every_default(self, tmp_path: Path) -> None:
        settings = load(tmp_path, config(WORKFLOW))
        state = tmp_path / "state"
        assert settings.state_dir == state
        assert settings.listen == "127.0.0.1:3000"
        assert (settings.listen_host, settings.listen_port) == ("127.0.0.1", 3000)
        assert settings.min_agent_version == "0.2.0"
        assert settings.databases == (DatabaseRegistration("app", ("staging", "production")),)
        assert settings.execution_policies == ()
        assert settings.result_policies == ()
        assert settings.auth == AuthSettings(
            default_role=None, roles=(), groups=(), token_policy=TokenPolicySettings(5)
        )
        assert settings.retention == RetentionSettings(
            request_ttl_days=90,
            audit_ttl_days=365,
            result_ttl_days=30,
            pending_ttl_secs=86400,
            approved_ttl_secs=86400,
            agent_ttl_days=7,
        )
        assert settings.audit.redaction is AuditRedaction.LITERALS
        assert settings.result_storage == ResultStorageSettings(
            root_dir=state / "results", backend="local", max_persist_bytes=10485760
        )
        assert settings.result_channel == ResultChannelSettings(slot_ttl_secs=600, max_slots=10000)
        assert settings.sweeps == SweepSettings(
            lease_reclaim_interval_secs=5,
            dispatch_timeout_interval_secs=5,
            ttl_expiry_interval_secs=5,
            dispatch_timeout_secs=300,
            record_purge_interval_secs=3600,
        )
        assert settings.store == StoreSettings(f"sqlite:///{state}/dbward.db")
        assert settings.store.url.startswith("sqlite:////")
        assert settings.store.is_sqlite
        assert settings.logging == LoggingSettings("info", LogFormat.TEXT)
        assert settings.warnings == ()

    def test_defaults_equal_the_hand_built_settings(self, tmp_path: Path) -> None:
        settings = load(tmp_path, config(WORKFLOW))
        by_hand = ServerSettings.for_state_dir(
            tmp_path / "state", databases=settings.databases, workflows=settings.workflows
        )
        assert settings == by_hand

    def test_no_workflows_is_a_warning(self, tmp_path: Path) -> None:
        settings = load(tmp_path, config())
        assert warnings(settings, tmp_path) == [
            "workflows: no [[workflows]]: every request will be refused (fail-closed); add a "
            "workflow for each database and environment that takes requests"
        ]

    def test_every_key_set(self, tmp_path: Path) -> None:
        text = config(
            """
            [[workflows]]
            database = "app"
            environment = "production"
            operations = ["execute_dml", "migrate_up"]
            require_reason = true
            allow_self_approve = true
            allow_same_approver_across_steps = true
            explain = false
            pending_ttl_secs = 3600
            approved_ttl_secs = 7200
            statement_timeout_secs = 45
            [workflows.auto_approve]
            mode = "risk_based"
            risk = "medium"
            allow_read_only = false
            [[workflows.steps]]
            type = "approval"
            mode = "any"
            [[workflows.steps.approvers]]
            role = "dba"
            min = 2
            [[workflows.steps.approvers]]
            user = "alice"
            [[workflows.steps]]
            [[workflows.steps.approvers]]
            group = "leads"

            [[execution_policies]]
            database = "app"
            environment = "production"
            max_executions = 3
            execution_window_secs = 600
            retry_on_failure = true
            statement_timeout_secs = 60
            max_statement_timeout_secs = 120
            migration_statement_timeout_secs = 900
            migration_lease_duration_secs = 1200
            max_rows = 500

            [[result_policies]]
            database = "app"
            retention_days = 7
            delivery_mode = "stream"
            access = ["role:dba", "user:bob"]

            [auth]
            default_role = "requester"
            [[auth.roles]]
            name = "dba"
            permissions = ["request.view:any", "result.view:any", "*"]
            databases = ["app"]
            environments = ["production"]
            [[auth.groups]]
            name = "leads"
            roles = ["dba", "approver"]
            [auth.token_policy]
            max_active_tokens_per_user = 0

            [retention]
            request_ttl_days = 10
            audit_ttl_days = 20
            result_ttl_days = 3
            pending_ttl_secs = 60
            approved_ttl_secs = 120
            agent_ttl_days = 2

            [audit]
            redaction = "full"

            [result_storage]
            backend = "store"
            root_dir = "/var/lib/dbward/results"
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
            url = "postgresql://dbward:pw@db.internal/dbward"

            [logging]
            level = "debug"
            format = "json"
            """,
            base='listen = "0.0.0.0:8080"\nmin_agent_version = "0.3.1"\n' + BASE,
        )
        settings = load(tmp_path, text)
        assert settings.listen == "0.0.0.0:8080"
        assert settings.min_agent_version == "0.3.1"
        assert settings.workflows == (
            Workflow(
                database="app",
                environment="production",
                operations=(Operation.EXECUTE_DML, Operation.MIGRATE_UP),
                require_reason=True,
                allow_self_approve=True,
                allow_same_approver_across_steps=True,
                explain=False,
                pending_ttl_secs=3600,
                approved_ttl_secs=7200,
                statement_timeout_secs=45,
                auto_approve=AutoApprove(
                    AutoApproveMode.RISK_BASED,
                    RiskLevel.MEDIUM,
                    allow_read_only=False,
                ),
                steps=(
                    ApprovalStep(
                        (
                            Approver(Selector(SelectorKind.ROLE, "dba"), 2),
                            Approver(Selector(SelectorKind.USER, "alice")),
                        ),
                        StepMode.ANY,
                    ),
                    ApprovalStep((Approver(Selector(SelectorKind.GROUP, "leads")),)),
                ),
            ),
        )
        assert settings.execution_policies == (
            ExecutionPolicy(
                database="app",
                environment="production",
                max_executions=3,
                execution_window_secs=600,
                retry_on_failure=True,
                statement_timeout_secs=60,
                max_statement_timeout_secs=120,
                migration_statement_timeout_secs=900,
                migration_lease_duration_secs=1200,
                max_rows=500,
            ),
        )
        assert settings.result_policies == (
            ResultPolicy(
                database="app",
                environment="*",
                retention_days=7,
                delivery_mode=DeliveryMode.STREAM,
                access=(Selector(SelectorKind.ROLE, "dba"), Selector(SelectorKind.USER, "bob")),
            ),
        )
        assert settings.auth == AuthSettings(
            default_role="requester",
            roles=(
                CustomRoleSettings(
                    "dba",
                    ("request.view:any", "result.view:any", "*"),
                    ("app",),
                    ("production",),
                ),
            ),
            groups=(GroupSettings("leads", ("dba", "approver")),),
            token_policy=TokenPolicySettings(0),
        )
        assert settings.retention == RetentionSettings(10, 20, 3, 60, 120, 2)
        assert settings.audit.redaction is AuditRedaction.FULL
        assert settings.result_storage == ResultStorageSettings(
            Path("/var/lib/dbward/results"), "store", 1024
        )
        assert settings.result_channel == ResultChannelSettings(30, 5)
        assert settings.sweeps == SweepSettings(1, 2, 3, 60, 600)
        assert settings.store.url == "postgresql://dbward:pw@db.internal/dbward"
        assert not settings.store.is_sqlite
        assert "pw" not in repr(settings.store)
        assert settings.logging == LoggingSettings("debug", LogFormat.JSON)
        assert settings.warnings == ()


# --- paths ----------------------------------------------------------------------------------


class TestPaths:
    def test_state_dir_is_relative_to_the_config_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        elsewhere = tmp_path / "cwd"
        elsewhere.mkdir()
        monkeypatch.chdir(elsewhere)
        conf = tmp_path / "etc"
        conf.mkdir()
        settings = load(conf, config(WORKFLOW))
        assert settings.state_dir == conf / "state"
        assert settings.store.url == f"sqlite:///{conf}/state/dbward.db"
        assert settings.result_storage.root_dir == conf / "state" / "results"

    def test_absolute_state_dir(self, tmp_path: Path) -> None:
        base = f'state_dir = "{tmp_path}/abs"\n[[databases]]\nname = "app"\nenvironments = ["x"]'
        settings = load(tmp_path, config(base=base))
        assert settings.state_dir == tmp_path / "abs"

    def test_relative_root_dir(self, tmp_path: Path) -> None:
        settings = load(tmp_path, config(WORKFLOW, '[result_storage]\nroot_dir = "blobs"'))
        assert settings.result_storage.root_dir == tmp_path / "blobs"

    def test_relative_sqlite_store(self, tmp_path: Path) -> None:
        settings = load(tmp_path, config(WORKFLOW, '[store]\nurl = "sqlite:///db/x.db?mode=rwc"'))
        assert settings.store.url == f"sqlite:///{tmp_path}/db/x.db?mode=rwc"

    def test_absolute_sqlite_store(self, tmp_path: Path) -> None:
        settings = load(tmp_path, config(WORKFLOW, '[store]\nurl = "sqlite:////srv/x.db"'))
        assert settings.store.url == "sqlite:////srv/x.db"

    @pytest.mark.parametrize("url", ["sqlite:///", "sqlite:///:memory:"])
    def test_in_memory_store_is_refused(self, tmp_path: Path, url: str) -> None:
        assert error(tmp_path, config(WORKFLOW, f'[store]\nurl = "{url}"')) == (
            "store.url: an in-memory SQLite store loses everything on restart; give a file"
        )

    def test_postgres_spelling(self, tmp_path: Path) -> None:
        text = config(WORKFLOW, '[store]\nurl = "postgres://u:secret@h/db"')
        assert error(tmp_path, text) == (
            "store.url: write postgresql:// instead of postgres:// (SQLAlchemy's spelling)"
        )

    def test_a_postgresql_store_keeps_results_in_the_store_by_default(self, tmp_path: Path) -> None:
        text = config(WORKFLOW, '[store]\nurl = "postgresql://u@h/db"')
        assert load(tmp_path, text).result_storage.backend == "store"
        assert load(tmp_path, config(WORKFLOW)).result_storage.backend == "local"

    def test_local_results_on_a_postgresql_store_are_refused(self, tmp_path: Path) -> None:
        text = config(
            WORKFLOW, '[store]\nurl = "postgresql://u@h/db"\n[result_storage]\nbackend = "local"'
        )
        assert "other replicas" in error(tmp_path, text)
        assert error(tmp_path, text).startswith("result_storage.backend: ")

    def test_key_encryption_key_file_is_relative_to_the_config(self, tmp_path: Path) -> None:
        text = config(WORKFLOW, '[signing]\nkey_encryption_key_file = "secrets/kek"')
        assert load(tmp_path, text).signing.key_encryption_key_file == tmp_path / "secrets/kek"
        assert load(tmp_path, config(WORKFLOW)).signing.key_encryption_key_file is None

    def test_postgresql_psycopg_driver_is_allowed(self, tmp_path: Path) -> None:
        text = config(WORKFLOW, '[store]\nurl = "postgresql+psycopg://u@h/db"')
        assert load(tmp_path, text).store.url == "postgresql+psycopg://u@h/db"

    def test_unsupported_store_scheme(self, tmp_path: Path) -> None:
        text = config(WORKFLOW, '[store]\nurl = "mysql://u:secret@h/db"')
        message = error(tmp_path, text)
        assert "secret" not in message
        assert message == (
            'store.url: unsupported store URL scheme "mysql://"; use sqlite:///<path> (the '
            "default is <state_dir>/dbward.db) or postgresql://user:password@host/dbname"
        )

    def test_store_url_type_error_hides_the_value(self, tmp_path: Path) -> None:
        text = config(WORKFLOW, "[store]\nurl = 5")
        assert error(tmp_path, text) == "store.url: expected a string, got integer 5"


# --- reading and expansion --------------------------------------------------------------------


class TestReadingAndExpansion:
    def test_missing_file(self, tmp_path: Path) -> None:
        path = tmp_path / "absent.toml"
        with pytest.raises(ConfigError) as caught:
            load_server_settings(path, {})
        assert str(caught.value) == f"{path}: cannot read config: No such file or directory"

    def test_not_utf8(self, tmp_path: Path) -> None:
        path = tmp_path / "server.toml"
        path.write_bytes(b'state_dir = "\xff"\n')
        with pytest.raises(ConfigError) as caught:
            load_server_settings(path, {})
        assert str(caught.value) == f"{path}: cannot read config: not UTF-8 (byte 13)"

    def test_invalid_toml(self, tmp_path: Path) -> None:
        assert error(tmp_path, "[[databases]\n").startswith("invalid TOML: ")

    def test_variables_expand_in_values(self, tmp_path: Path) -> None:
        text = config(
            WORKFLOW,
            '[store]\nurl = "postgresql://dbward:${PW}@${HOST:-localhost}/dbward"',
            base=BASE.replace('"state"', '"${STATE:-state}"'),
        )
        settings = load(tmp_path, text, {"PW": "s3cret", "STATE": "/srv/dbward"})
        assert settings.store.url == "postgresql://dbward:s3cret@localhost/dbward"
        assert settings.state_dir == Path("/srv/dbward")

    def test_variables_expand_inside_arrays_of_tables(self, tmp_path: Path) -> None:
        text = config(WORKFLOW.replace('"approver"', '"${APPROVER_ROLE}"'))
        settings = load(tmp_path, text, {"APPROVER_ROLE": "operator"})
        assert str(settings.workflows[0].steps[0].approvers[0].selector) == "role:operator"

    def test_undefined_variable_names_file_and_key(self, tmp_path: Path) -> None:
        text = config(WORKFLOW, '[store]\nurl = "postgresql://u:${PW}@h/db"')
        assert error(tmp_path, text) == (
            "store.url: undefined environment variable ${PW}; set it or write ${PW:-default}"
        )

    def test_expansion_problems_in_lists_name_the_index(self, tmp_path: Path) -> None:
        text = config(WORKFLOW.replace('"approver"', '"${A}"'), '[auth]\ndefault_role = "${B}"')
        assert error_lines(tmp_path, text) == [
            "workflows[0].steps[0].approvers[0].role: undefined environment variable ${A}; "
            "set it or write ${A:-default}",
            "auth.default_role: undefined environment variable ${B}; set it or write ${B:-default}",
        ]

    def test_comments_are_not_expanded(self, tmp_path: Path) -> None:
        assert load(tmp_path, config(WORKFLOW, "# ${NOPE}")).warnings == ()

    def test_keys_are_not_expanded(self, tmp_path: Path) -> None:
        message = error(tmp_path, top('"${X}" = 1'), {"X": "listen"})
        assert message.startswith('"${X}": unknown key (valid keys here: state_dir, listen, ')

    def test_escape(self, tmp_path: Path) -> None:
        text = config(WORKFLOW, '[store]\nurl = "sqlite:///$${odd}/x.db"')
        assert load(tmp_path, text).store.url == f"sqlite:///{tmp_path}/${{odd}}/x.db"


# --- shape: unknown keys, types, missing keys -------------------------------------------------


class TestShape:
    @pytest.mark.parametrize(
        ("extra", "expected"),
        [
            (
                "[retention]\nrequest_ttl_day = 1",
                "retention.request_ttl_day: unknown key (did you mean request_ttl_days?)",
            ),
            (
                "[sweeps]\nlease_reclaim_secs = 1",
                "sweeps.lease_reclaim_secs: unknown key "
                "(did you mean lease_reclaim_interval_secs?)",
            ),
            (
                "[auth]\ndefault_roles = 'x'",
                "auth.default_roles: unknown key (did you mean default_role?)",
            ),
            (
                "[auth.token_policy]\nmax_tokens = 1",
                "auth.token_policy.max_tokens: unknown key "
                "(valid keys here: max_active_tokens_per_user)",
            ),
            (
                "[[execution_policies]]\nmax_execution = 1",
                "execution_policies[0].max_execution: unknown key (did you mean max_executions?)",
            ),
            (
                "[[result_policies]]\ndelivery = 'both'",
                "result_policies[0].delivery: unknown key (did you mean delivery_mode?)",
            ),
            ("[logging]\nlevl = 'info'", "logging.levl: unknown key (did you mean level?)"),
            ("[audit]\nredact = 'full'", "audit.redact: unknown key (did you mean redaction?)"),
            ("[loging]\nlevel = 'info'", "loging: unknown key (did you mean logging?)"),
        ],
    )
    def test_unknown_keys_name_the_nearest(self, tmp_path: Path, extra: str, expected: str) -> None:
        assert error(tmp_path, config(WORKFLOW, extra)) == expected

    def test_unknown_top_level_key(self, tmp_path: Path) -> None:
        assert error(tmp_path, top('lisen = "x"')) == "lisen: unknown key (did you mean listen?)"

    def test_unknown_keys_deep_in_workflows(self, tmp_path: Path) -> None:
        text = config(
            """
            [[workflows]]
            database = "app"
            require_reasons = true
            [workflows.auto_approve]
            mode = "risk_based"
            risc = "low"
            [[workflows.steps]]
            mod = "all"
            [[workflows.steps.approvers]]
            rol = "dba"
            """
        )
        assert sorted(error_lines(tmp_path, text)) == [
            "workflows[0].auto_approve.risc: unknown key (did you mean risk?)",
            "workflows[0].require_reasons: unknown key (did you mean require_reason?)",
            "workflows[0].steps[0].approvers[0].rol: unknown key (did you mean role?)",
            "workflows[0].steps[0].mod: unknown key (did you mean mode?)",
        ]

    def test_unknown_key_in_databases_and_roles(self, tmp_path: Path) -> None:
        text = config(
            WORKFLOW,
            """
            [[databases]]
            name = "billing"
            envs = ["x"]
            [[auth.roles]]
            name = "dba"
            permission = []
            """,
        )
        assert error_lines(tmp_path, text) == [
            "databases[1].environments: required key is missing; add the environments this "
            'database exists in, e.g. environments = ["production"]',
            "databases[1].envs: unknown key (valid keys here: name, environments)",
            "auth.roles[0].permissions: required key is missing; add permissions = [...] "
            '(e.g. ["request.query", "request.view:any"]; [] for a role used only as an '
            "approver)",
            "auth.roles[0].permission: unknown key (did you mean permissions?)",
        ]

    @pytest.mark.parametrize(
        ("extra", "expected"),
        [
            (
                "[retention]\naudit_ttl_days = '365'",
                'retention.audit_ttl_days: expected an integer, got string "365"',
            ),
            (
                "[retention]\naudit_ttl_days = 1.5",
                "retention.audit_ttl_days: expected an integer, got float 1.5",
            ),
            (
                "[retention]\naudit_ttl_days = true",
                "retention.audit_ttl_days: expected an integer, got boolean true",
            ),
            (
                "[retention]\naudit_ttl_days = 0",
                "retention.audit_ttl_days: must be at least 1, got integer 0",
            ),
            (
                "[sweeps]\ndispatch_timeout_secs = -1",
                "sweeps.dispatch_timeout_secs: must be at least 1, got integer -1",
            ),
            (
                "[auth.token_policy]\nmax_active_tokens_per_user = -1",
                "auth.token_policy.max_active_tokens_per_user: must be at least 0, got integer -1",
            ),
            (
                "[result_channel]\nmax_slots = 0",
                "result_channel.max_slots: must be at least 1, got integer 0",
            ),
            (
                "[result_storage]\nmax_persist_bytes = 0",
                "result_storage.max_persist_bytes: must be at least 1, got integer 0",
            ),
            (
                "[[retention]]\naudit_ttl_days = 1",
                "retention: expected a table, got an array; write [retention] once",
            ),
            (
                "[[execution_policies]]\nmax_rows = 1.0",
                "execution_policies[0].max_rows: expected an integer, got float 1.0",
            ),
            (
                "[[execution_policies]]\nmigration_lease_duration_secs = 30",
                "execution_policies[0]."
                "migration_lease_duration_secs: must be at least 60, got integer 30",
            ),
            (
                "[[execution_policies]]\nretry_on_failure = 'yes'",
                'execution_policies[0].retry_on_failure: expected true or false, got string "yes"',
            ),
        ],
    )
    def test_wrong_types_and_ranges(self, tmp_path: Path, extra: str, expected: str) -> None:
        assert error(tmp_path, config(WORKFLOW, extra)) == expected

    @pytest.mark.parametrize(
        ("line", "expected"),
        [
            ("listen = 3000", "listen: expected a string, got integer 3000"),
            ("audit = 'full'", 'audit: expected a table, got string "full"'),
            (
                'trusted_proxies = ["10.0.0.0/8"]',
                "trusted_proxies: trusted_proxies is a dbward "
                "0.2 setting that is not supported yet; remove it",
            ),
        ],
    )
    def test_top_level_types(self, tmp_path: Path, line: str, expected: str) -> None:
        assert error(tmp_path, top(line)) == expected

    def test_workflows_as_a_table(self, tmp_path: Path) -> None:
        text = config("[workflows]\ndatabase = 'app'")
        assert error(tmp_path, text) == (
            "workflows: expected an array, got a table; write [[workflows]] for each entry"
        )

    def test_nested_arrays_of_tables_hints(self, tmp_path: Path) -> None:
        text = config(
            """
            [[workflows]]
            database = "app"
            [workflows.steps]
            mode = "all"
            """
        )
        assert error(tmp_path, text) == (
            "workflows[0].steps: expected an array, got a table; write [[workflows.steps]] "
            "for each entry"
        )

    def test_workflow_durations_positive(self, tmp_path: Path) -> None:
        text = config(workflow_with("pending_ttl_secs = 0"))
        assert error(tmp_path, text) == (
            "workflows[0].pending_ttl_secs: must be at least 1, got integer 0"
        )

    def test_missing_state_dir(self, tmp_path: Path) -> None:
        text = '[[databases]]\nname = "app"\nenvironments = ["x"]\n'
        assert error(tmp_path, text) == (
            'state_dir: required key is missing; add state_dir = "./data" (a directory for '
            "the server's state, relative to this file)"
        )

    def test_missing_databases(self, tmp_path: Path) -> None:
        assert error(tmp_path, 'state_dir = "x"') == (
            "databases: required key is missing; register at least one database: "
            '[[databases]] name = "app" environments = ["production"]'
        )

    def test_missing_auto_approve_mode(self, tmp_path: Path) -> None:
        text = config(WORKFLOW, "[workflows.auto_approve]\nrisk = 'low'")
        assert error(tmp_path, text) == (
            'workflows[0].auto_approve.mode: required key is missing; add mode = "always" or '
            'mode = "risk_based" with a risk threshold'
        )

    def test_every_shape_problem_at_once(self, tmp_path: Path) -> None:
        text = config(WORKFLOW, "lisen = 1\n[retention]\naudit_ttl_days = 0\n[logging]\nx = 1")
        assert len(error_lines(tmp_path, text)) == 3


# --- gone, renamed and not-yet-supported keys -------------------------------------------------


class TestDeprecatedAndUnsupported:
    @pytest.mark.parametrize(
        ("extra", "expected"),
        [
            (
                '[[users]]\nid = "alice"',
                "users: [[users]] is no longer read from the config; add users through the API "
                "(dbward user add <ID> --role <role>)",
            ),
            (
                '[[auth.role_bindings]]\nrole = "dba"',
                "auth.role_bindings: [[auth.role_bindings]] is no longer read from the config; "
                "give users roles through the API (dbward user add/update --role <role>), or "
                "give roles to [[auth.groups]]",
            ),
            (
                '[[auth.groups]]\nname = "leads"\nroles = ["approver"]\nmembers = ["alice"]',
                "auth.groups[0].members: group members are no longer read from the config; add "
                "them through the API (dbward user update <ID> --add-group <group>)",
            ),
            (
                '[[auto_approve]]\ndatabase = "app"',
                "auto_approve: a top-level [[auto_approve]] is no longer supported; move it into "
                "the workflow it belongs to as [workflows.auto_approve]",
            ),
            (
                "[retention]\napproval_ttl_secs = 60",
                "retention.approval_ttl_secs: renamed: use pending_ttl_secs (it always set how "
                "long a request may wait for approval); approved_ttl_secs sets how long an "
                "approved request may wait to be resumed",
            ),
            (
                '[auth.oidc]\nissuer = "https://idp"',
                "auth.oidc: [auth.oidc] is a dbward 0.2 setting that is not supported yet; "
                "remove it",
            ),
            (
                '[result_storage]\nbucket = "b"',
                'result_storage.bucket: applies to backend = "s3", which is not supported yet; '
                "remove it",
            ),
        ],
    )
    def test_explicit_messages(self, tmp_path: Path, extra: str, expected: str) -> None:
        assert error(tmp_path, config(WORKFLOW, extra)) == expected

    def test_workflow_approval_ttl_secs(self, tmp_path: Path) -> None:
        text = config(workflow_with("approval_ttl_secs = 60"))
        assert error(tmp_path, text) == (
            "workflows[0].approval_ttl_secs: renamed: use approved_ttl_secs (how long an "
            "approved request may wait to be resumed); pending_ttl_secs sets how long it may "
            "wait for approval"
        )

    def test_requester_as_approver(self, tmp_path: Path) -> None:
        text = config(WORKFLOW.replace('role = "approver"', "requester = true"))
        assert error(tmp_path, text) == (
            "workflows[0].steps[0].approvers[0].requester: the requester cannot be an approver; "
            "name a role, group or user (allow_self_approve = true lets a requester who "
            "matches one of them approve)"
        )

    def test_s3_backend(self, tmp_path: Path) -> None:
        text = config(WORKFLOW, '[result_storage]\nbackend = "s3"')
        assert error(tmp_path, text) == (
            'result_storage.backend: "s3" is not supported yet; use backend = "store" '
            '(in the store) or "local"'
        )


# --- top-level values ---------------------------------------------------------------------------


class TestTopLevel:
    @pytest.mark.parametrize(
        ("listen", "host", "port"),
        [
            ("0.0.0.0:80", "0.0.0.0", 80),
            ("[::1]:3000", "::1", 3000),
            ("localhost:65535", "localhost", 65535),
        ],
    )
    def test_valid_listen(self, tmp_path: Path, listen: str, host: str, port: int) -> None:
        settings = load(tmp_path, config(WORKFLOW, base=f'listen = "{listen}"\n' + BASE))
        assert (settings.listen_host, settings.listen_port) == (host, port)

    @pytest.mark.parametrize(
        "listen", ["3000", ":3000", "host:", "host:0", "host:70000", "::1:3000", "h:x"]
    )
    def test_invalid_listen(self, tmp_path: Path, listen: str) -> None:
        assert error(tmp_path, config(WORKFLOW, base=f'listen = "{listen}"\n' + BASE)) == (
            'listen: expected "host:port" such as "127.0.0.1:3000" or "[::1]:3000", '
            f'got string "{listen}"'
        )

    @pytest.mark.parametrize("version", ["0.2", "v0.2.0", "0.2.0-rc1", ""])
    def test_invalid_min_agent_version(self, tmp_path: Path, version: str) -> None:
        text = config(WORKFLOW, base=f'min_agent_version = "{version}"\n' + BASE)
        assert error(tmp_path, text) == (
            f'min_agent_version: expected a version such as "0.2.0", got string "{version}"'
        )

    def test_empty_state_dir(self, tmp_path: Path) -> None:
        text = config(WORKFLOW, base=BASE.replace('"state"', '""'))
        assert error(tmp_path, text) == 'state_dir: must not be empty; e.g. state_dir = "./data"'


# --- [[databases]] -------------------------------------------------------------------------------


class TestDatabases:
    def test_names_are_validated(self, tmp_path: Path) -> None:
        base = 'state_dir = "s"\n[[databases]]\nname = "App"\nenvironments = ["prod", "Prod", "*"]'
        assert error_lines(tmp_path, config(base=base)) == [
            "databases[0].name: invalid database name 'App': use 1-63 characters of a-z, 0-9, "
            "'_' or '-', starting with a letter",
            "databases[0].environments[1]: invalid environment name 'Prod': use 1-63 "
            "characters of a-z, 0-9, '_' or '-', starting with a letter",
            "databases[0].environments[2]: invalid environment name '*': use 1-63 characters "
            "of a-z, 0-9, '_' or '-', starting with a letter",
        ]

    def test_a_trailing_newline_is_not_part_of_a_valid_name(self, tmp_path: Path) -> None:
        base = 'state_dir = "s"\n[[databases]]\nname = "app\\n"\nenvironments = ["prod\\n"]'
        assert error_lines(tmp_path, config(base=base)) == [
            "databases[0].name: invalid database name 'app\\n': use 1-63 characters of a-z, "
            "0-9, '_' or '-', starting with a letter",
            "databases[0].environments[0]: invalid environment name 'prod\\n': use 1-63 "
            "characters of a-z, 0-9, '_' or '-', starting with a letter",
        ]

    def test_duplicates(self, tmp_path: Path) -> None:
        text = config(
            WORKFLOW,
            """
            [[databases]]
            name = "app"
            environments = ["dev", "dev"]
            """,
        )
        assert error_lines(tmp_path, text) == [
            "databases[1].name: database 'app' is already registered by databases[0]; list "
            "all its environments there",
            "databases[1].environments[1]: 'dev' is listed twice; remove the duplicate",
        ]

    def test_empty_environments(self, tmp_path: Path) -> None:
        base = 'state_dir = "s"\n[[databases]]\nname = "app"\nenvironments = []'
        assert error(tmp_path, config(base=base)) == (
            "databases[0].environments: empty; list the environments this database exists in, "
            'e.g. ["production"]'
        )

    def test_empty_list(self, tmp_path: Path) -> None:
        assert error(tmp_path, 'state_dir = "s"\ndatabases = []') == (
            'databases: no database registered; add [[databases]] name = "app" '
            'environments = ["production"]'
        )

    def test_registered_scopes(self, tmp_path: Path) -> None:
        settings = load(tmp_path, config(WORKFLOW))
        assert settings.registered_scopes == {Scope("app", "staging"), Scope("app", "production")}
        assert settings.is_registered("app", "production")
        assert not settings.is_registered("app", "development")


# --- [[workflows]] ----------------------------------------------------------------------------


class TestWorkflows:
    def test_operations_are_canonical(self, tmp_path: Path) -> None:
        text = config(workflow_with('operations = ["query", "execute_dlm", "migrate_up"]'))
        assert error_lines(tmp_path, text) == [
            'workflows[0].operations[0]: "query" is an alias; use the canonical name '
            "execute_select",
            'workflows[0].operations[1]: unknown operation "execute_dlm" (did you mean '
            "execute_dml?); valid: execute_select, execute_dml, migrate_up, migrate_down, "
            "migrate_status, migrate_repair",
        ]

    def test_auto_approve_always_inline(self, tmp_path: Path) -> None:
        text = config('[[workflows]]\nauto_approve = { mode = "always" }')
        (workflow,) = load(tmp_path, text).workflows
        assert workflow.auto_approve == AutoApprove(AutoApproveMode.ALWAYS)
        assert (workflow.database, workflow.environment) == ("*", "*")

    def test_auto_approve_mode_choices(self, tmp_path: Path) -> None:
        text = config('[[workflows]]\nauto_approve = { mode = "alway" }')
        assert error(tmp_path, text) == (
            'workflows[0].auto_approve.mode: must be one of "always", "risk_based", got '
            'string "alway" (did you mean always?)'
        )

    def test_always_takes_no_risk_keys(self, tmp_path: Path) -> None:
        text = config(
            '[[workflows]]\nauto_approve = { mode = "always", risk = "low", '
            "allow_read_only = true }"
        )
        message = (
            'applies to mode = "risk_based" only; remove it (mode "always" approves every request)'
        )
        assert error_lines(tmp_path, text) == [
            f"workflows[0].auto_approve.risk: {message}",
            f"workflows[0].auto_approve.allow_read_only: {message}",
        ]

    def test_risk_choices(self, tmp_path: Path) -> None:
        text = config(WORKFLOW, '[workflows.auto_approve]\nmode = "risk_based"\nrisk = "lo"')
        assert error(tmp_path, text) == (
            'workflows[0].auto_approve.risk: must be one of "low", "medium", "high", got '
            'string "lo" (did you mean low?)'
        )

    def test_risk_critical_is_refused_by_the_domain_rule(self, tmp_path: Path) -> None:
        text = config(WORKFLOW, '[workflows.auto_approve]\nmode = "risk_based"\nrisk = "critical"')
        assert error(tmp_path, text) == (
            "workflows[0].auto_approve.risk: must be low, medium or high, got critical"
        )

    def test_risk_based_defaults(self, tmp_path: Path) -> None:
        text = config(WORKFLOW, '[workflows.auto_approve]\nmode = "risk_based"\nrisk = "high"')
        rule = load(tmp_path, text).workflows[0].auto_approve
        assert rule == AutoApprove(AutoApproveMode.RISK_BASED, RiskLevel.HIGH, True, True, 1000)

    def test_step_mode_and_type(self, tmp_path: Path) -> None:
        text = config(
            WORKFLOW.replace(
                "[[workflows.steps]]", '[[workflows.steps]]\nmode = "some"\ntype = "vote"'
            )
        )
        assert error_lines(tmp_path, text) == [
            'workflows[0].steps[0].type: must be "approval" (or left out), got string "vote"',
            'workflows[0].steps[0].mode: must be one of "all", "any", got string "some"',
        ]

    def test_approver_needs_exactly_one_selector(self, tmp_path: Path) -> None:
        text = config(
            """
            [[workflows]]
            [[workflows.steps]]
            [[workflows.steps.approvers]]
            min = 1
            [[workflows.steps.approvers]]
            role = "dba"
            user = "alice"
            """
        )
        assert error_lines(tmp_path, text) == [
            "workflows[0].steps[0].approvers[0]: needs one of role, group or user, "
            'e.g. role = "dba"',
            "workflows[0].steps[0].approvers[1]: set exactly one of role, group or user, got "
            "role and user; use one approver entry for each",
        ]

    def test_domain_rules_come_through_with_file_and_key(self, tmp_path: Path) -> None:
        text = config(
            """
            [[workflows]]
            database = "app"
            [[workflows]]
            database = "app"
            environment = "production"
            auto_approve = { mode = "always" }
            [[workflows.steps]]
            [[workflows.steps.approvers]]
            user = "alice"
            min = 2
            [[workflows]]
            environment = "staging"
            auto_approve = { mode = "risk_based", risk = "low" }
            [[workflows]]
            environment = "staging"
            operations = ["execute_dml"]
            [[workflows.steps]]
            approvers = []
            """
        )
        assert error_lines(tmp_path, text) == [
            "workflows[0]: needs auto_approve, steps, or both; add [workflows.auto_approve] or "
            "[[workflows.steps]] with approvers",
            'workflows[1].steps: unreachable: auto_approve mode "always" approves every request '
            'before any step; remove the steps or use mode "risk_based"',
            "workflows[1].steps[0].approvers[0].min: a user approves once, so min must be 1, "
            "got 2; use a role or group to require several approvals",
            'workflows[2].auto_approve: mode "risk_based" needs [[workflows.steps]] for the '
            "requests above the risk threshold (they would have no way to be approved); add "
            'steps or use mode "always"',
            "workflows[3].steps[0].approvers: no approvers; add [[workflows.steps.approvers]] "
            "with role, group or user",
            "workflows[2]: a catch-all workflow (no operations) cannot share database '*', "
            "environment 'staging' with workflows that list operations (workflows[3]); give it "
            "an explicit operations list",
        ]

    def test_overlap_same_operation(self, tmp_path: Path) -> None:
        text = config(
            workflow_with('operations = ["execute_dml"]'),
            workflow_with('operations = ["execute_dml"]'),
        )
        assert error(tmp_path, text) == (
            "workflows[1].operations[0]: execute_dml for database 'app', environment "
            "'production' is already covered by workflows[0]; each operation may appear in one "
            "workflow per scope"
        )

    def test_single_workflow_rules_still_run_when_another_fails_to_build(
        self, tmp_path: Path
    ) -> None:
        text = config(
            '[[workflows]]\noperations = ["nope"]\nauto_approve = { mode = "always" }',
            '[[workflows]]\ndatabase = "app"',
        )
        assert error_lines(tmp_path, text) == [
            'workflows[0].operations[0]: unknown operation "nope"; valid: execute_select, '
            "execute_dml, migrate_up, migrate_down, migrate_status, migrate_repair",
            "workflows[1]: needs auto_approve, steps, or both; add [workflows.auto_approve] or "
            "[[workflows.steps]] with approvers",
        ]

    def test_names_and_registration(self, tmp_path: Path) -> None:
        always = 'auto_approve = { mode = "always" }'
        text = config(
            f'[[workflows]]\ndatabase = "billing"\n{always}',
            f'[[workflows]]\ndatabase = "app"\nenvironment = "dev"\n{always}',
            f'[[workflows]]\nenvironment = "qa"\n{always}',
            f'[[workflows]]\ndatabase = "Bad"\n{always}',
        )
        assert error_lines(tmp_path, text) == [
            "workflows[3].database: invalid database name 'Bad': use 1-63 characters of a-z, "
            "0-9, '_' or '-', starting with a letter, or \"*\" for any",
            "workflows[0].database: database 'billing' is not registered; add it to "
            "[[databases]] (registered: app)",
            "workflows[1].environment: environment 'dev' is not registered for database 'app'; "
            "add it to its environments in [[databases]] (registered: production, staging)",
            "workflows[2].environment: environment 'qa' is not registered for any database; add "
            "it to the environments of a [[databases]] entry (registered: production, staging)",
        ]

    def test_warnings_are_returned_with_file_and_key(self, tmp_path: Path) -> None:
        text = config(
            """
            [[workflows]]
            [[workflows.steps]]
            [[workflows.steps.approvers]]
            role = "dba"
            [[workflows.steps.approvers]]
            group = "leads"
            [[workflows.steps]]
            [[workflows.steps.approvers]]
            role = "dba"
            """
        )
        assert warnings(load(tmp_path, text), tmp_path) == [
            "workflows[0].steps[1].approvers[0]: role:dba also approves steps[0]; this step "
            "needs a different member of role dba than steps[0]",
            "workflows[0].steps[0].approvers[0].role: role 'dba' is neither built-in nor in "
            "[[auth.roles]]; unless it is created through the API, nobody can approve this step",
            "workflows[0].steps[0].approvers[1].group: group 'leads' is not in [[auth.groups]]; "
            "unless its members come from the API or an identity provider, nobody can approve "
            "this step",
            "workflows[0].steps[1].approvers[0].role: role 'dba' is neither built-in nor in "
            "[[auth.roles]]; unless it is created through the API, nobody can approve this step",
        ]

    def test_statement_timeout_must_fit_the_policy_cap(self, tmp_path: Path) -> None:
        text = config(
            workflow_with("statement_timeout_secs = 900"),
            "[[execution_policies]]\nenvironment = 'staging'\nmax_statement_timeout_secs = 1000",
        )
        assert error(tmp_path, text) == (
            "workflows[0].statement_timeout_secs: 900 is above max_statement_timeout_secs (600) "
            "of execution policy ep:*:* for app/production; lower it or raise that policy's cap"
        )
        raised = text.replace("environment = 'staging'", "environment = 'production'")
        assert load(tmp_path, raised).workflows[0].statement_timeout_secs == 900

    def test_lookup_helpers(self, tmp_path: Path) -> None:
        text = config(
            workflow_with("pending_ttl_secs = 60"),
            "[retention]\napproved_ttl_secs = 99",
        )
        settings = load(tmp_path, text)
        workflow = settings.workflow_for("app", "production", Operation.EXECUTE_DML)
        assert workflow is settings.workflows[0]
        assert settings.workflow_for("app", "staging", Operation.EXECUTE_DML) is None
        assert settings.pending_ttl_secs(workflow) == 60
        assert settings.approved_ttl_secs(workflow) == 99
        assert settings.pending_ttl_secs(None) == 86400


# --- policies ---------------------------------------------------------------------------------


class TestPolicies:
    def test_execution_policy_defaults_fill_in(self, tmp_path: Path) -> None:
        text = config(WORKFLOW, "[[execution_policies]]\nenvironment = 'production'\nmax_rows = 9")
        settings = load(tmp_path, text)
        assert settings.execution_policies == (
            ExecutionPolicy(environment="production", max_rows=9),
        )
        assert settings.execution_policy_for("app", "production").max_rows == 9
        assert settings.execution_policy_for("app", "staging") == ExecutionPolicy()

    def test_execution_policy_rules(self, tmp_path: Path) -> None:
        text = config(
            WORKFLOW,
            """
            [[execution_policies]]
            database = "app"
            statement_timeout_secs = 700
            [[execution_policies]]
            database = "app"
            [[execution_policies]]
            database = "ghost"
            """,
        )
        assert error_lines(tmp_path, text) == [
            "execution_policies[2].database: database 'ghost' is not registered; add it to "
            "[[databases]] (registered: app)",
            "execution_policies[1]: same database 'app' and environment '*' as "
            "execution_policies[0], so it would never apply; merge the two",
            "execution_policies[0].statement_timeout_secs: 700 is above "
            "max_statement_timeout_secs (600); lower it or raise the cap",
        ]

    def test_result_policy_retention_defaults_to_result_ttl_days(self, tmp_path: Path) -> None:
        text = config(
            WORKFLOW,
            "[[result_policies]]\ndatabase = 'app'\n[retention]\nresult_ttl_days = 12",
        )
        settings = load(tmp_path, text)
        assert settings.result_policies == (ResultPolicy("app", retention_days=12),)
        assert settings.result_policy_for("app", "production").retention_days == 12
        assert settings.result_policy_for("other", "x") == ResultPolicy(retention_days=12)

    def test_result_policy_rules(self, tmp_path: Path) -> None:
        text = config(
            WORKFLOW,
            """
            [[result_policies]]
            environment = "production"
            delivery_mode = "persist"
            access = ["role:dba", "dba", "team:x", "requester"]
            """,
        )
        assert error_lines(tmp_path, text) == [
            'result_policies[0].delivery_mode: must be one of "both", "stream", got string '
            '"persist"',
            "result_policies[0].access[1]: invalid selector: missing ':' in 'dba'; expected "
            "requester, role:<name>, group:<name> or user:<name>",
            "result_policies[0].access[2]: invalid selector: unknown prefix 'team' in 'team:x'",
            "result_policies[0].access[3]: the requester can always read their results; remove it",
        ]


# --- [auth] -----------------------------------------------------------------------------------


class TestAuth:
    def test_custom_roles_and_groups(self, tmp_path: Path) -> None:
        text = config(
            WORKFLOW,
            """
            [auth]
            default_role = "viewer"
            [[auth.roles]]
            name = "viewer"
            permissions = ["request.view:any", "schema.read"]
            [[auth.roles]]
            name = "approver-only"
            permissions = []
            environments = ["*"]
            [[auth.groups]]
            name = "sre"
            roles = ["viewer", "operator"]
            """,
        )
        auth = load(tmp_path, text).auth
        assert auth.default_role == "viewer"
        assert [role.name for role in auth.roles] == ["viewer", "approver-only"]
        assert auth.roles[1].environments == ("*",)
        assert auth.groups == (GroupSettings("sre", ("viewer", "operator")),)

    def test_role_rules(self, tmp_path: Path) -> None:
        text = config(
            WORKFLOW,
            """
            [[auth.roles]]
            name = "admin"
            permissions = []
            [[auth.roles]]
            name = "dba"
            permissions = ["request.execute", "request.veiw", "request.view:all", "*:any"]
            databases = ["billing", "Bad"]
            environments = ["qa"]
            [[auth.roles]]
            name = "dba"
            permissions = []
            [[auth.roles]]
            name = "Has Space"
            permissions = []
            """,
        )
        assert error_lines(tmp_path, text) == [
            "auth.roles[0].name: 'admin' is a built-in role and cannot be redefined; choose "
            "another name (built-in: admin, requester, approver, operator, agent-default)",
            "auth.roles[1].permissions[0]: deprecated permission 'request.execute' is no longer "
            "supported; use request.query, request.dml or request.ddl",
            "auth.roles[1].permissions[1]: unknown permission 'request.veiw' (did you mean "
            "request.view?)",
            "auth.roles[1].permissions[2]: invalid ownership suffix 'all' in "
            "'request.view:all': use ':own' or ':any'",
            "auth.roles[1].permissions[3]: the wildcard permission '*' takes no suffix: '*:any'",
            "auth.roles[1].databases[0]: database 'billing' is not registered; add it to "
            "[[databases]] (registered: app)",
            "auth.roles[1].databases[1]: invalid database name 'Bad': use 1-63 characters of "
            "a-z, 0-9, '_' or '-', starting with a letter, or \"*\" for any",
            "auth.roles[1].environments[0]: environment 'qa' is not registered for any "
            "database; add it to the environments of a [[databases]] entry (registered: "
            "production, staging)",
            "auth.roles[2].name: role 'dba' is already defined by auth.roles[1]",
            "auth.roles[3].name: invalid role name 'Has Space': use 1-63 characters of a-z, "
            "0-9, '_' or '-', starting with a letter",
        ]

    def test_group_and_default_role_rules(self, tmp_path: Path) -> None:
        text = config(
            WORKFLOW,
            """
            [auth]
            default_role = "requestor"
            [[auth.groups]]
            name = "sre"
            roles = []
            [[auth.groups]]
            name = "sre"
            roles = ["dba"]
            """,
        )
        assert error_lines(tmp_path, text) == [
            'auth.groups[0].roles: empty; give the group at least one role, e.g. ["approver"]',
            "auth.groups[1].name: group 'sre' is already defined by auth.groups[0]",
            "auth.groups[1].roles[0]: unknown role 'dba'; use a built-in role (admin, "
            "requester, approver, operator, agent-default) or define it in [[auth.roles]]",
            "auth.default_role: unknown role 'requestor' (did you mean requester?); use a "
            "built-in role (admin, requester, approver, operator, agent-default) or define it "
            "in [[auth.roles]]",
        ]


# --- other sections ---------------------------------------------------------------------------


class TestOtherSections:
    @pytest.mark.parametrize(
        ("extra", "expected"),
        [
            (
                "[audit]\nredaction = 'literal'",
                'audit.redaction: must be one of "literals", "full", "none", got string '
                '"literal" (did you mean literals?)',
            ),
            (
                "[logging]\nlevel = 'warn'",
                'logging.level: must be one of "debug", "info", "warning", "error", "critical", '
                'got string "warn" (did you mean warning?)',
            ),
            (
                "[logging]\nformat = 'yaml'",
                'logging.format: must be one of "text", "json", got string "yaml"',
            ),
            (
                "[result_storage]\nbackend = 'gcs'",
                'result_storage.backend: must be one of "local", "store", got string "gcs"',
            ),
            (
                "[result_storage]\nroot_dir = ''",
                "result_storage.root_dir: must not be empty; leave it out for the default",
            ),
        ],
    )
    def test_choices(self, tmp_path: Path, extra: str, expected: str) -> None:
        assert error(tmp_path, config(WORKFLOW, extra)) == expected

    def test_redaction_none(self, tmp_path: Path) -> None:
        settings = load(tmp_path, config(WORKFLOW, "[audit]\nredaction = 'none'"))
        assert settings.audit.redaction is AuditRedaction.NONE


# --- all together, and the example ------------------------------------------------------------


def test_problems_from_every_section_are_reported_together(tmp_path: Path) -> None:
    text = top(
        'listen = "nope"',
        """
        [[execution_policies]]
        max_executions = 0
        [auth]
        default_role = "ghost"
        [logging]
        level = "loud"
        """,
    )
    lines = error_lines(tmp_path, text)
    assert [line.partition(":")[0] for line in lines] == ["execution_policies[0].max_executions"]
    # shape errors stop before meaning; fix them and the rest shows up together
    fixed = text.replace("max_executions = 0", "max_executions = 2")
    keys = [line.partition(": ")[0] for line in error_lines(tmp_path, fixed)]
    assert keys == ["listen", "auth.default_role", "logging.level"]


class TestExample:
    def test_example_loads_without_environment_variables(self) -> None:
        settings = load_server_settings(EXAMPLE, {})
        assert settings.warnings == ()
        assert settings.state_dir == EXAMPLE.parent / "data"
        assert settings.databases == (DatabaseRegistration("app", ("development", "production")),)
        development, production = settings.workflows
        assert development.auto_approve == AutoApprove(AutoApproveMode.ALWAYS)
        assert development.steps == ()
        assert [str(step.selectors[0]) for step in production.steps] == [
            "role:approver",
            "role:dba",
        ]
        assert production.require_reason
        assert settings.workflow_for("app", "production", Operation.MIGRATE_UP) is production
        (policy,) = settings.execution_policies
        assert (policy.database, policy.environment) == ("app", "production")
        assert [role.name for role in settings.auth.roles] == ["dba"]
        assert settings.audit.redaction is AuditRedaction.LITERALS
        assert settings.retention.audit_ttl_days == 730


def test_preflight_limits_load_and_default(tmp_path: Path) -> None:
    assert load(tmp_path, config()).preflight.max_concurrent_per_user == 3
    settings = load(
        tmp_path, config("[preflight]\nmax_concurrent_per_user = 1\nmax_explain_timeout_ms = 900")
    )
    assert settings.preflight.max_concurrent_per_user == 1
    assert settings.preflight.max_explain_timeout_ms == 900
    assert "preflight.max_explain_timeout_ms" in error(
        tmp_path, config("[preflight]\nmax_explain_timeout_ms = 0")
    )


class TestSqlReview:
    """`[[sql_review]]` (docs/sql-safety.md §5) and the risk knobs of `auto_approve`."""

    def test_entries_load_with_their_rules_and_defaults_elsewhere(self, tmp_path: Path) -> None:
        settings = load(
            tmp_path,
            config(
                WORKFLOW,
                """
                [[sql_review]]
                database = "app"
                environment = "production"
                truncate = "warn"
                create_sequence = "block"
                [[sql_review]]
                no_where_update = "off"
                """,
            ),
        )
        exact, broad = settings.sql_review
        assert (exact.database, exact.environment) == ("app", "production")
        assert dict(exact.rules) == {
            ReviewRule.TRUNCATE: RuleAction.WARN,
            ReviewRule.CREATE_SEQUENCE: RuleAction.BLOCK,
        }
        assert (broad.database, broad.environment) == ("*", "*")
        assert settings.review_policy_for("app", "production") is exact
        assert settings.review_policy_for("app", "staging") is broad
        assert broad.action(ReviewRule.DROP_TABLE) is RuleAction.BLOCK

    def test_without_entries_the_builtin_policy_applies(self, tmp_path: Path) -> None:
        settings = load(tmp_path, config(WORKFLOW))
        assert settings.review_policy_for("app", "production").id == "builtin-default"

    def test_an_unknown_rule_is_refused_naming_the_key(self, tmp_path: Path) -> None:
        message = error(tmp_path, config(WORKFLOW, '[[sql_review]]\ndrop_tabel = "warn"'))
        assert message.startswith("sql_review[0].drop_tabel: unknown key")
        assert "drop_table" in message

    def test_an_action_other_than_block_warn_off_is_refused(self, tmp_path: Path) -> None:
        message = error(tmp_path, config(WORKFLOW, '[[sql_review]]\ntruncate = "blok"'))
        assert message.startswith('sql_review[0].truncate: must be one of "block", "warn", "off"')
        assert "did you mean block?" in message

    def test_the_reserved_any_and_a_repeated_scope_are_refused(self, tmp_path: Path) -> None:
        lines = error_lines(
            tmp_path,
            config(
                WORKFLOW,
                '[[sql_review]]\ndatabase = "app"\n[[sql_review]]\ndatabase = "app"\n'
                '[[sql_review]]\nenvironment = "any"',
            ),
        )
        assert any(line.startswith("sql_review[1]: same database 'app'") for line in lines)
        assert any(
            line.startswith("sql_review[2].environment: 'any' is reserved") for line in lines
        )

    def test_an_unregistered_scope_is_refused(self, tmp_path: Path) -> None:
        message = error(tmp_path, config(WORKFLOW, '[[sql_review]]\ndatabase = "billing"'))
        assert message.startswith("sql_review[0]")
        assert "billing" in message

    def test_a_single_table_says_to_write_an_array_of_tables(self, tmp_path: Path) -> None:
        message = error(tmp_path, config(WORKFLOW, "[sql_review]\ndrop_table = 'warn'"))
        assert message.startswith("sql_review: ")
        assert "write [[sql_review]] for each entry" in message

    def test_risk_knobs_of_auto_approve_load(self, tmp_path: Path) -> None:
        settings = load(
            tmp_path,
            config(
                WORKFLOW,
                '[workflows.auto_approve]\nmode = "risk_based"\nrisk = "low"\n'
                "allow_safe_ddl = false\nmax_estimated_rows = 50",
            ),
        )
        rule = settings.workflows[0].auto_approve
        assert rule is not None
        assert (rule.allow_safe_ddl, rule.max_estimated_rows) == (False, 50)

    def test_risk_knobs_default_to_safe_ddl_and_a_thousand_rows(self, tmp_path: Path) -> None:
        settings = load(
            tmp_path,
            config(WORKFLOW, '[workflows.auto_approve]\nmode = "risk_based"\nrisk = "low"'),
        )
        rule = settings.workflows[0].auto_approve
        assert rule is not None
        assert (rule.allow_safe_ddl, rule.max_estimated_rows) == (True, 1000)

    @pytest.mark.parametrize("line", ["max_estimated_rows = 0", "max_estimated_rows = -5"])
    def test_max_estimated_rows_must_be_positive(self, tmp_path: Path, line: str) -> None:
        message = error(
            tmp_path,
            config(
                WORKFLOW, f'[workflows.auto_approve]\nmode = "risk_based"\nrisk = "low"\n{line}'
            ),
        )
        assert message.startswith("workflows[0].auto_approve.max_estimated_rows:")

    @pytest.mark.parametrize("line", ["allow_safe_ddl = true", "max_estimated_rows = 10"])
    def test_risk_knobs_apply_to_risk_based_only(self, tmp_path: Path, line: str) -> None:
        name = line.split(" ", maxsplit=1)[0]
        message = error(
            tmp_path, config(WORKFLOW, f'[workflows.auto_approve]\nmode = "always"\n{line}')
        )
        assert message.startswith(f"workflows[0].auto_approve.{name}: applies to mode")


def test_metrics_listen_is_optional_and_parsed(tmp_path: Path) -> None:
    assert load(tmp_path, config(WORKFLOW)).metrics.listen is None
    settings = load(tmp_path, config(WORKFLOW, '[metrics]\nlisten = "10.0.0.5:9100"\n'))
    assert settings.metrics.listen == ListenAddress("10.0.0.5", 9100)


def test_a_malformed_metrics_listen_is_refused(tmp_path: Path) -> None:
    assert error(tmp_path, config(WORKFLOW, '[metrics]\nlisten = "9100"\n')) == (
        'metrics.listen: expected "host:port" such as "127.0.0.1:3000" or "[::1]:3000", '
        'got string "9100"'
    )
