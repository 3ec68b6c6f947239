"""The control-plane tables (docs/server.md §7.1), portable between SQLite and PostgreSQL.

Portability rules, because several server replicas may share one PostgreSQL database while
the embedded default is one SQLite file (docs/server.md §7.1):

* Only types both engines have: `Text`, `Integer`, `BigInteger`, `Boolean`, `LargeBinary`
  (BLOB / BYTEA, for opaque bytes only). No JSON, UUID,
  ARRAY, ENUM or TIMESTAMPTZ columns. Strings are `Text` everywhere (no `VARCHAR(n)`: SQLite
  would not enforce the length and PostgreSQL would, so a test could pass on one engine and
  fail on the other); lengths are validated by the application.
* JSON is stored as TEXT (`*_json` columns), encoded and decoded by the application.
* **Timestamps are TEXT in one fixed format, `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC, always
  microseconds, always `Z`)**, written with `format_timestamp`. Every value has the same
  length and field order, so string order is time order and `<`, `>`, `ORDER BY` and
  `MIN`/`MAX` work identically on both engines without any date function. TEXT also keeps
  the audit chain exact: an event's `created_at` is hashed as the string that is stored
  (§6.3), which a `DateTime` column could re-render differently per driver.
* Status columns carry CHECK constraints (`col IN (...)`), the portable form of the
  reference's validation triggers. The lists are frozen literals here, not read from
  domain enums, so that widening one is a visible schema migration.
* Partial unique indexes use `sqlite_where` / `postgresql_where` with the same predicate.
* Constraint and index names come from `NAMING_CONVENTION`, so they are identical on both
  engines and a later migration can drop or alter them by name.

Not here in this slice: `groups` (config only), `roles`, `workflows`, the policy tables,
`webhooks`, `result_access`, `request_context` and the bookkeeping tables. Add each one
with its own migration step (see `migrations.py`).
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    false,
    func,
    text,
)

from domain.shared.timestamps import TIMESTAMP_FORMAT as _TIMESTAMP_FORMAT
from domain.shared.timestamps import format_timestamp as _format_timestamp
from domain.shared.timestamps import parse_timestamp as _parse_timestamp

# --- timestamps ---------------------------------------------------------------------------

# The format and its helpers live in the domain (audit events hash the stored string);
# re-exported here for the store's callers.
TIMESTAMP_FORMAT = _TIMESTAMP_FORMAT
format_timestamp = _format_timestamp
parse_timestamp = _parse_timestamp


# --- metadata -----------------------------------------------------------------------------

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# Frozen value lists for CHECK constraints (docs/server.md §1.1, §7.1, docs/protocol.md).
OPERATIONS = (
    "execute_select",
    "execute_dml",
    "migrate_up",
    "migrate_down",
    "migrate_status",
    "migrate_repair",
)
REQUEST_STATUSES = (
    "pending",
    "approved",
    "auto_approved",
    "break_glass",
    "dispatched",
    "running",
    "executed",
    "failed",
    "execution_lost",
    "rejected",
    "cancelled",
    "expired",
)
#: The states a request can be dispatched from (kept so a dispatch timeout can go back).
PRE_DISPATCH_STATUSES = (
    "approved",
    "auto_approved",
    "break_glass",
    "executed",
    "failed",
    "execution_lost",
)
EXECUTION_STATUSES = ("claimed", "running", "completed", "failed")


def _one_of(column: str, values: Iterable[str], *, name: str | None = None) -> CheckConstraint:
    """`CHECK (column IN ('a', 'b'))`; NULL passes, as in SQL (NOT NULL is separate)."""
    listed = ", ".join("'" + value.replace("'", "''") + "'" for value in values)
    return CheckConstraint(f"{column} IN ({listed})", name=name or column)


def _ts(name: str, *, nullable: bool = False) -> Column[str]:
    """A timestamp column: TEXT in `TIMESTAMP_FORMAT`."""
    return Column(name, Text, nullable=nullable)


def _json(name: str, default: str | None) -> Column[str]:
    """A JSON-as-TEXT column; with a default it is NOT NULL."""
    if default is None:
        return Column(name, Text, nullable=True)
    return Column(name, Text, nullable=False, server_default=default)


def _flag(name: str) -> Column[bool]:
    return Column(name, Boolean, nullable=False, server_default=false())


#: Audit `seq`: BIGINT (identity via BIGSERIAL) on PostgreSQL, and on SQLite an
#: `INTEGER PRIMARY KEY AUTOINCREMENT`, the only form SQLite auto-numbers.
_SEQ_TYPE = BigInteger().with_variant(Integer(), "sqlite")


# --- tables -------------------------------------------------------------------------------

databases = Table(
    "databases",
    metadata,
    Column("id", Text, primary_key=True),  # "{name}:{environment}"
    Column("name", Text, nullable=False),
    Column("environment", Text, nullable=False),
    Column("dialect", Text, nullable=False, server_default="postgresql"),
    Column("source", Text, nullable=False, server_default="config"),
    Column("lifecycle_state", Text, nullable=False, server_default="active"),
    _ts("created_at"),
    UniqueConstraint("name", "environment"),
    _one_of("dialect", ("postgresql", "mysql")),
    _one_of("lifecycle_state", ("active", "orphan")),
)

users = Table(
    "users",
    metadata,
    Column("id", Text, primary_key=True),
    Column("display_name", Text),
    Column("email", Text),
    _json("roles_json", "[]"),
    Column("status", Text, nullable=False, server_default="active"),
    Column("source", Text, nullable=False, server_default="api"),
    Column("slack_user_id", Text, unique=True),
    Column("lifecycle_state", Text, nullable=False, server_default="active"),
    _ts("last_seen_at", nullable=True),
    _ts("created_at"),
    _ts("updated_at"),
    _one_of("status", ("active", "suspended")),
    _one_of("lifecycle_state", ("active", "deleted")),
)

group_members = Table(
    "group_members",
    metadata,
    # Groups themselves are config-only in this slice, so group_name has no foreign key.
    Column("group_name", Text, nullable=False),
    Column("user_id", Text, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    _ts("added_at"),
    PrimaryKeyConstraint("group_name", "user_id"),
    Index("ix_group_members_user_id", "user_id"),
)

tokens = Table(
    "tokens",
    metadata,
    Column("id", Text, primary_key=True),
    Column("subject_type", Text, nullable=False),
    Column("subject_id", Text, nullable=False),
    Column("token_hash", Text, nullable=False, unique=True),  # hex SHA-256 of the raw token
    Column("token_prefix", Text, nullable=False),  # raw token chars [4:12)
    _json("scope_ceiling_json", None),
    Column("name", Text),
    Column("status", Text, nullable=False, server_default="active"),
    Column("provisioning_kind", Text),
    _ts("expires_at", nullable=True),
    _ts("created_at"),
    _ts("revoked_at", nullable=True),
    _one_of("subject_type", ("user", "agent")),
    _one_of("status", ("active", "revoked")),
    _one_of("provisioning_kind", ("initial", "bootstrap")),
    Index("ix_tokens_token_prefix", "token_prefix"),
    Index("ix_tokens_subject", "subject_type", "subject_id", "status"),
    # At most one active initial token per subject (§4.5).
    Index(
        "ux_tokens_active_initial",
        "subject_type",
        "subject_id",
        unique=True,
        sqlite_where=text("provisioning_kind = 'initial' AND status = 'active'"),
        postgresql_where=text("provisioning_kind = 'initial' AND status = 'active'"),
    ),
)

requests = Table(
    "requests",
    metadata,
    Column("id", Text, primary_key=True),
    Column("requester", Text, nullable=False),
    Column("operation", Text, nullable=False),
    Column("database_id", Text, ForeignKey("databases.id"), nullable=False),
    Column("detail", Text, nullable=False),
    Column("status", Text, nullable=False),
    # The status a dispatch came from, so a dispatch timeout can return to it (§11.4).
    Column("pre_dispatch_status", Text),
    _flag("emergency"),
    Column("reason", Text),
    Column("idempotency_key", Text),
    Column("idempotency_fingerprint", Text),  # sha256(detail)
    _json("metadata_json", "{}"),
    _json("share_with_json", "[]"),
    _flag("no_store"),
    _json("workflow_snapshot_json", None),  # NULL: emergency request without a workflow
    _json("decision_trace_json", None),
    _json("execution_plan_json", None),  # NULL for migrations and parse failures
    Column("cancelled_by", Text),
    Column("cancel_reason", Text),
    _flag("audit_incomplete"),
    _ts("created_at"),
    _ts("updated_at"),
    _ts("resolved_at", nullable=True),
    _ts("expires_at", nullable=True),
    # NULL keys never collide (both engines treat NULLs as distinct in UNIQUE).
    UniqueConstraint("requester", "idempotency_key"),
    _one_of("operation", OPERATIONS),
    _one_of("status", REQUEST_STATUSES),
    _one_of("pre_dispatch_status", PRE_DISPATCH_STATUSES),
    Index("ix_requests_status_database_id", "status", "database_id"),
    Index("ix_requests_status_updated_at", "status", "updated_at"),
    Index("ix_requests_requester_created_at", "requester", "created_at"),
)

approvals = Table(
    "approvals",
    metadata,
    Column("id", Text, primary_key=True),
    Column("request_id", Text, ForeignKey("requests.id", ondelete="CASCADE"), nullable=False),
    Column("action", Text, nullable=False),
    Column("actor_id", Text, nullable=False),
    Column("matched_selector", Text),
    Column("step_index", Integer, nullable=False),
    Column("comment", Text),
    _ts("created_at"),
    _one_of("action", ("approve", "reject")),
    Index("ix_approvals_request_id", "request_id"),
    # One approval per actor per step (§7.1).
    Index(
        "ux_approvals_one_per_step",
        "request_id",
        "actor_id",
        "step_index",
        unique=True,
        sqlite_where=text("action = 'approve'"),
        postgresql_where=text("action = 'approve'"),
    ),
)

request_pending_approvers = Table(
    "request_pending_approvers",
    metadata,
    Column("request_id", Text, ForeignKey("requests.id", ondelete="CASCADE"), nullable=False),
    Column("selector", Text, nullable=False),
    Column("step_index", Integer, nullable=False),
    PrimaryKeyConstraint("request_id", "selector", "step_index"),
    Index("ix_request_pending_approvers_selector", "selector"),
)

executions = Table(
    "executions",
    metadata,
    Column("id", Text, primary_key=True),
    Column("request_id", Text, ForeignKey("requests.id", ondelete="CASCADE"), nullable=False),
    Column("agent_id", Text, nullable=False),  # the agent token's subject
    Column("status", Text, nullable=False),
    Column("token", Text, nullable=False),  # the signed execution token, as sent
    Column("lease_secs", Integer, nullable=False),  # what a heartbeat extends the lease by
    _ts("lease_expires_at"),
    _ts("started_at"),
    _ts("finished_at", nullable=True),
    Column("error_message", Text),
    _ts("created_at"),
    _one_of("status", EXECUTION_STATUSES),
    Index("ix_executions_request_id_created_at", "request_id", "created_at"),
    Index("ix_executions_status_lease_expires_at", "status", "lease_expires_at"),
    # A request has at most one claimed execution: this decides a double claim (§1.5).
    Index(
        "ux_executions_one_claimed",
        "request_id",
        unique=True,
        sqlite_where=text("status = 'claimed'"),
        postgresql_where=text("status = 'claimed'"),
    ),
)

#: One row per finished execution: the persisted result summary, so a client that
#: reconnects (or talks to another replica) always gets its result (§11.14).
results = Table(
    "results",
    metadata,
    Column("id", Text, primary_key=True),  # "res-{execution_id}"
    Column("request_id", Text, ForeignKey("requests.id", ondelete="CASCADE"), nullable=False),
    Column(
        "execution_id",
        Text,
        ForeignKey("executions.id", ondelete="CASCADE"),
        nullable=False,
        unique=True,
    ),
    Column("success", Boolean, nullable=False),
    Column("rows_affected", BigInteger),
    Column("duration_ms", BigInteger),
    _flag("truncated"),
    Column("truncation_reason", Text),
    Column("error_message", Text),
    Column("storage_backend", Text),
    Column("storage_key", Text, nullable=False, server_default=""),  # "" = not stored
    Column("content_length", BigInteger, nullable=False, server_default=text("0")),
    Column("checksum_sha256", Text),
    Column("retention_days", Integer),
    Column("status", Text, nullable=False, server_default="stored"),
    _ts("stored_at"),
    _ts("expires_at", nullable=True),
    _one_of("status", ("stored", "expired")),
    Index("ix_results_request_id_stored_at", "request_id", "stored_at"),
    Index("ix_results_status_expires_at", "status", "expires_at"),
)

#: The agent registry (§7.3): one row per (agent token's subject, `agent_id` the agent
#: sent, "" when it sent none), so agents sharing a token keep their own rows.
#: `degraded_scopes_json` is additive information from our agents.
agents = Table(
    "agents",
    metadata,
    Column("id", Text, primary_key=True),
    Column("agent_id", Text, primary_key=True),
    Column("token_id", Text),
    _json("databases_json", "[]"),  # the scopes of the last poll
    _json("operations_json", "[]"),
    Column("status", Text, nullable=False, server_default="active"),
    Column("max_concurrent", Integer, nullable=False, server_default=text("4")),
    Column("in_flight", Integer, nullable=False, server_default=text("0")),
    Column("uptime_secs", BigInteger, nullable=False, server_default=text("0")),
    _json("active_jobs_json", "[]"),
    Column("agent_version", Text),
    Column("agent_build", Text),
    _json("degraded_scopes_json", "[]"),
    _ts("last_seen_at", nullable=True),
    _ts("created_at"),
    _one_of("status", ("active", "draining")),
)

#: The audit log (§6.1). `seq` orders the chain on both engines (SQLite's rowid has no
#: PostgreSQL equivalent); on SQLite it is AUTOINCREMENT, so a deleted tail row's number is
#: never reused.
audit_events = Table(
    "audit_events",
    metadata,
    Column("seq", _SEQ_TYPE, primary_key=True, autoincrement=True),
    Column("id", Text, nullable=False, unique=True),
    Column("event_type", Text, nullable=False),
    Column("event_category", Text, nullable=False),
    Column("event_version", Integer, nullable=False, server_default=text("1")),
    Column("outcome", Text, nullable=False),
    Column("actor_id", Text, nullable=False),
    Column("actor_type", Text, nullable=False),
    Column("resource_type", Text),
    Column("resource_id", Text),
    Column("peer_ip", Text),
    Column("client_ip", Text),
    Column("client_ip_source", Text),
    Column("request_id", Text),
    Column("operation", Text),
    Column("database_name", Text),
    Column("environment", Text),
    Column("detail_fingerprint", Text),
    Column("detail_raw", Text),
    Column("reason", Text),
    _json("metadata_json", "{}"),
    Column("prev_hash", Text),
    Column("event_hash", Text, nullable=False),
    Column("chain_version", Integer, nullable=False, server_default=text("2")),
    _ts("created_at"),  # hashed as stored
    CheckConstraint("length(event_hash) = 64", name="event_hash_length"),
    CheckConstraint("prev_hash IS NULL OR length(prev_hash) = 64", name="prev_hash_length"),
    Index("ix_audit_events_created_at", "created_at"),
    Index("ix_audit_events_request_id", "request_id"),
    Index("ix_audit_events_actor_id", "actor_id"),
    Index("ix_audit_events_event_type", "event_type"),
    sqlite_autoincrement=True,
)

#: No two events may name the same predecessor (the first event's NULL counts as ""): the
#: database itself refuses a forked chain, whatever the writer's locking or isolation.
Index(
    "ux_audit_events_prev_hash",
    func.coalesce(audit_events.c.prev_hash, ""),
    unique=True,
)

#: Purges of the audit chain's prefix (§6.4, schema version 2): the retained chain may
#: start only right after a `last_purged_hash` named here, under the row's signature.
audit_purge_checkpoints = Table(
    "audit_purge_checkpoints",
    metadata,
    Column("id", Text, primary_key=True),
    Column("last_purged_event_id", Text, nullable=False),
    Column("last_purged_hash", Text, nullable=False, unique=True),
    Column("purged_through_position", BigInteger, nullable=False),
    Column("purged_count", BigInteger, nullable=False),
    _ts("purged_before"),
    Column("key_id", Text, nullable=False),
    Column("signature", Text, nullable=False),  # hex
    _ts("created_at"),
    CheckConstraint("length(last_purged_hash) = 64", name="last_purged_hash_length"),
)

schema_snapshots = Table(
    "schema_snapshots",
    metadata,
    Column("database_name", Text, nullable=False),
    Column("environment", Text, nullable=False),
    Column("status", Text, nullable=False),
    _json("snapshot_json", None),
    Column("error_message", Text),
    Column("dialect", Text, nullable=False),
    _ts("collected_at"),
    Column("agent_id", Text, nullable=False),
    PrimaryKeyConstraint("database_name", "environment"),
    _one_of("status", ("ready", "failed", "partial")),
    _one_of("dialect", ("postgresql", "mysql")),
)

#: EXPLAIN on request creation, one row per statement (docs/protocol.md §3.7, §9).
dry_run_jobs = Table(
    "dry_run_jobs",
    metadata,
    Column("id", Text, primary_key=True),
    Column("request_id", Text, ForeignKey("requests.id", ondelete="CASCADE"), nullable=False),
    Column("database_name", Text, nullable=False),
    Column("environment", Text, nullable=False),
    Column("sql", Text, nullable=False),
    Column("status", Text, nullable=False, server_default="pending"),
    Column("claimed_by", Text),
    _ts("claimed_at", nullable=True),
    Column("claim_token", Text),
    _json("result_json", None),
    Column("error_message", Text),
    _ts("created_at"),
    _ts("completed_at", nullable=True),
    _one_of("status", ("pending", "claimed", "completed", "failed")),
    Index("ix_dry_run_jobs_status_scope", "status", "database_name", "environment"),
    Index("ix_dry_run_jobs_request_id", "request_id"),
)

#: EXPLAIN for `POST /api/preflight`, short-lived (docs/protocol.md §3.9, §9).
preflight_jobs = Table(
    "preflight_jobs",
    metadata,
    Column("id", Text, primary_key=True),
    Column("requester", Text, nullable=False),  # for the per-user concurrency cap
    Column("database_name", Text, nullable=False),
    Column("environment", Text, nullable=False),
    Column("sql", Text, nullable=False),
    Column("status", Text, nullable=False, server_default="pending"),
    Column("claimed_by", Text),
    _ts("claimed_at", nullable=True),
    Column("claim_token", Text),
    _json("result_json", None),
    Column("error_message", Text),
    _ts("expires_at"),
    _ts("created_at"),
    _ts("completed_at", nullable=True),
    _one_of("status", ("pending", "claimed", "completed", "error", "expired")),
    Index("ix_preflight_jobs_status_scope", "status", "database_name", "environment"),
    Index("ix_preflight_jobs_requester_status", "requester", "status"),
    Index("ix_preflight_jobs_expires_at", "expires_at"),
)

#: Server secrets shared by every replica (schema version 4, docs/server.md §7.4): the
#: Ed25519 signing seed and the bootstrap tokens, each sealed with the key-encryption key
#: (AES-GCM, the row's name bound as associated data), never in clear.
server_secrets = Table(
    "server_secrets",
    metadata,
    Column("name", Text, primary_key=True),
    Column("sealed", LargeBinary, nullable=False),
    _ts("updated_at"),
)

#: Persisted result bodies (schema version 4, docs/server.md §7.4), addressed by the
#: result's `storage_key`, so any replica serves any result. No foreign key: the content
#: is written before its result row, exactly like a file of the local backend.
result_contents = Table(
    "result_contents",
    metadata,
    Column("storage_key", Text, primary_key=True),
    Column("content", LargeBinary, nullable=False),
)

#: Webhook deliveries (schema version 5, docs/operations.md "Webhooks"): the outbox,
#: written in the transaction of the event it announces. `claimed_until` is the sender's
#: lease on the row; `claim_token` names that sender, so only it records the outcome. No
#: foreign key to `requests`: a delivery outlives a purged request.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", Text, primary_key=True),
    Column("webhook_id", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("request_id", Text),
    Column("body", Text, nullable=False),
    Column("status", Text, nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    _ts("next_attempt_at"),
    _ts("claimed_until", nullable=True),
    Column("claim_token", Text),
    Column("last_status_code", Integer),
    Column("last_error", Text),
    _ts("created_at"),
    _ts("finished_at", nullable=True),
    _one_of("status", ("pending", "delivered", "failed")),
    Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
    Index("ix_webhook_deliveries_created_at", "created_at"),
)
