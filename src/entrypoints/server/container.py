"""Composition root of the server: the one place that knows every concrete class."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import threading
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dependency_injector import containers, providers
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from adapters.crypto.ed25519_signer import Ed25519Signer, read_legacy_seed
from adapters.crypto.key_encryption import AesGcmSecretCipher, load_key_encryption_key
from adapters.files.result_store import LocalResultStore
from adapters.files.secrets import LocalSecretFiles
from adapters.http_api.app import create_app
from adapters.http_api.console import ConsoleUseCases, mount_console
from adapters.http_api.mcp_endpoint import McpSessions, StartedOnFirstCall, mount_mcp
from adapters.http_api.notifier import AsyncioNotifier
from adapters.http_api.routes_agent import AgentUseCases, agent_body_limit, build_agent_router
from adapters.http_api.routes_approvals import ApprovalUseCases, build_approval_router
from adapters.http_api.routes_config import ConfigUseCases, build_config_router
from adapters.http_api.routes_identity import build_identity_router
from adapters.http_api.routes_metrics import build_metrics_router
from adapters.http_api.routes_preflight import PreflightUseCases, build_preflight_router
from adapters.http_api.routes_requests import RequestUseCases, build_request_router
from adapters.http_api.routes_results import build_result_router
from adapters.http_api.routes_webhooks import WebhookUseCases, build_webhook_router
from adapters.memory.result_relay import InMemoryResultRelay
from adapters.metrics.exposition import RegistryExposition
from adapters.metrics.server import PrometheusServerMetrics, register_state_gauges
from adapters.sql_review.sqlglot_classifier import SqlglotClassifier
from adapters.store.engine import create_store_engine
from adapters.store.result_contents import (
    SMALL_RESULT_BYTES,
    SmallResultsInStore,
    StoreResultContents,
)
from adapters.store.sql_store import SqlStore
from adapters.store.sqlite_calls import SqliteStoreCalls, WalCheckpointer
from adapters.store.wake_channel import PostgresWakeChannel
from adapters.system_clock import SystemClock
from adapters.webhooks.transport import HttpxWebhookTransport
from application.server.agent_protocol.agents import ListAgents
from application.server.agent_protocol.claim import ClaimJob
from application.server.agent_protocol.explain import (
    ClaimDryRunJob,
    SubmitDryRunResult,
    SubmitPreflightResult,
)
from application.server.agent_protocol.heartbeat import RecordHeartbeat
from application.server.agent_protocol.poll import PollForWork
from application.server.agent_protocol.public_key import GetPublicKey
from application.server.agent_protocol.results import SubmitResult
from application.server.agent_protocol.schema_sync import SyncSchema
from application.server.approvals.approve import ApproveRequest
from application.server.approvals.reject import RejectRequest
from application.server.audit_maintenance import AuditMaintenance
from application.server.configuration.databases import ListDatabases
from application.server.configuration.groups import ListGroups
from application.server.configuration.policies import ListPolicies
from application.server.configuration.policy_resolution import ResolvePolicies
from application.server.configuration.roles import ListRoles
from application.server.configuration.schemas import GetSchema
from application.server.configuration.workflows import ListWorkflows
from application.server.console.sessions import ConsoleSessions
from application.server.identity.audit_integrity import AuditIntegrity
from application.server.identity.audit_queries import AuditQueries
from application.server.identity.authentication import Authenticator
from application.server.identity.bootstrap import Bootstrapper
from application.server.identity.principal_cache import PrincipalCache
from application.server.identity.roles import RoleDirectory
from application.server.identity.signing_key import SigningKeyOrigin, provision_signing_seed
from application.server.identity.tokens import TokenService
from application.server.identity.users import UserService
from application.server.metrics_view import StoreGauges, ViewMetrics
from application.server.ports.metrics import ServerMetrics
from application.server.ports.services import (
    DispatchNotifier,
    ResultContentStore,
    SecretCipher,
    ServerClock,
)
from application.server.ports.store import StoreCalls
from application.server.preflight import RunPreflight
from application.server.readiness import StoreReadiness
from application.server.requests.cancel import CancelRequest
from application.server.requests.common import new_uuid
from application.server.requests.create import CreateRequest
from application.server.requests.fresh_results import FreshResults
from application.server.requests.judgement import JudgeSql
from application.server.requests.queries import GetRequest, ListExecutions, ListRequests
from application.server.requests.result_list import ListResults
from application.server.requests.results import GetResultContent, WaitForResult
from application.server.requests.resume import ResumeRequest
from application.server.retention import RetentionSweeps
from application.server.settings import ServerSettings
from application.server.store_calls import IN_THREADS
from application.server.sweeps import ServerSweeps, SweepJob, SweepRunner
from application.server.webhooks import (
    ListWebhookDeliveries,
    ListWebhooks,
    WebhookOutbox,
    WebhookSender,
)


@dataclass
class Draining:
    """Set once on shutdown: polls answer no jobs, claims and creates answer 503."""

    event: threading.Event = field(default_factory=threading.Event)

    def is_set(self) -> bool:
        return self.event.is_set()


def _sweep_schedule(retention: RetentionSweeps, audit: AuditMaintenance) -> tuple[SweepJob, ...]:
    """The sweeps that live in their own modules, run by the one sweep runner."""
    return (*retention.schedule, *audit.schedule)


log = logging.getLogger("dbward.server")


def _store(
    url: str, metrics: ServerMetrics, outbox: WebhookOutbox, principal_cache: PrincipalCache
) -> SqlStore:
    return SqlStore(
        # SQLite: the WAL is copied back by `WalCheckpointer`, never inside a commit that
        # may run on the event loop (adapters/store/sqlite_calls.py).
        create_store_engine(url, background_checkpoints=True),
        metrics,
        listener=outbox,
        on_identity_change=principal_cache.clear,
    )


def _store_calls(settings: ServerSettings, store: SqlStore) -> StoreCalls:
    """Where store work runs (docs/server.md §7.1): short work on the event loop with
    SQLite, everything on worker threads with PostgreSQL."""
    return SqliteStoreCalls(store.writer_busy) if settings.store.is_sqlite else IN_THREADS


def _wal_checkpointer(settings: ServerSettings, store: SqlStore) -> WalCheckpointer | None:
    return WalCheckpointer(store.engine) if settings.store.is_sqlite else None


def _with_state_gauges(
    registry: CollectorRegistry,
    notifier: AsyncioNotifier,
    gauges: StoreGauges,
    wake_channel: PostgresWakeChannel | None,
) -> CollectorRegistry:
    return register_state_gauges(
        registry,
        held_polls=lambda: notifier.waiting,
        agents_online=gauges.agents_online,
        audit_chain_length=gauges.audit_chain_length,
        wake_listener_connected=None
        if wake_channel is None
        else lambda: float(wake_channel.listening.is_set()),
    )


def _cipher(settings: ServerSettings, environ: Mapping[str, str]) -> AesGcmSecretCipher:
    """The key-encryption key's cipher; raises `KeyEncryptionKeyError` without a key."""
    key = load_key_encryption_key(
        environ,
        settings.signing.key_encryption_key_file,
        shared_store=not settings.store.is_sqlite,
        state_dir=settings.state_dir,
    )
    return AesGcmSecretCipher(key)


def _signer(
    store: SqlStore, cipher: SecretCipher, clock: ServerClock, state_dir: Path
) -> Ed25519Signer:
    """The one signing key of every replica, from the store (docs/server.md §7.4)."""
    seed, origin = provision_signing_seed(
        store,
        cipher,
        clock,
        legacy_seed=lambda: read_legacy_seed(state_dir),
        random_bytes=os.urandom,
    )
    signer = Ed25519Signer(seed)
    if origin is SigningKeyOrigin.IMPORTED:
        log.info(
            "signing key imported from %s into the store; the file is not read again",
            state_dir / "signing.key",
        )
    elif origin is SigningKeyOrigin.CREATED:
        log.info("signing key created in the store (public key %s)", signer.public_key_hex())
    return signer


def _result_store(settings: ServerSettings, store: SqlStore) -> ResultContentStore:
    storage = settings.result_storage
    if storage.backend == "store":
        return StoreResultContents(store.engine, storage.max_persist_bytes, store.transaction)
    files = LocalResultStore(storage.root_dir, storage.max_persist_bytes)
    threshold = min(SMALL_RESULT_BYTES, storage.max_persist_bytes)
    small = StoreResultContents(store.engine, threshold, store.transaction)
    return SmallResultsInStore(small, files, threshold)


def _wake_channel(settings: ServerSettings, local: AsyncioNotifier) -> PostgresWakeChannel | None:
    """LISTEN/NOTIFY between the replicas of a PostgreSQL store; none for SQLite."""
    return None if settings.store.is_sqlite else PostgresWakeChannel(settings.store.url, local)


def _notifier(local: AsyncioNotifier, channel: PostgresWakeChannel | None) -> DispatchNotifier:
    return local if channel is None else channel


class ServerContainer(containers.DeclarativeContainer):
    settings = providers.Dependency(instance_of=ServerSettings)
    version = providers.Object("unknown")
    #: Where the key-encryption key may come from (`DBWARD_KEY_ENCRYPTION_KEY`).
    environ = providers.Object(os.environ)

    clock = providers.Singleton(SystemClock)
    draining = providers.Singleton(Draining)
    #: One registry per server (never prometheus_client's global one).
    metrics_registry = providers.Singleton(CollectorRegistry)
    metrics = providers.Singleton(PrometheusServerMetrics, metrics_registry)
    #: Queues webhook deliveries in the transaction of each audit event that causes one.
    webhook_outbox = providers.Singleton(
        WebhookOutbox, settings.provided.webhooks, providers.Object(new_uuid)
    )
    principal_cache = providers.Singleton(PrincipalCache)
    store = providers.Singleton(
        _store,
        url=settings.provided.store.url,
        metrics=metrics,
        outbox=webhook_outbox,
        principal_cache=principal_cache,
    )
    store_calls = providers.Singleton(_store_calls, settings, store)
    wal_checkpointer = providers.Singleton(_wal_checkpointer, settings, store)
    local_notifier = providers.Singleton(AsyncioNotifier)
    wake_channel = providers.Singleton(_wake_channel, settings, local_notifier)
    notifier = providers.Singleton(_notifier, local_notifier, wake_channel)
    scraped_registry = providers.Singleton(
        _with_state_gauges,
        metrics_registry,
        local_notifier,
        providers.Singleton(StoreGauges, store=store, clock=clock),
        wake_channel,
    )
    view_metrics = providers.Singleton(
        ViewMetrics, providers.Singleton(RegistryExposition, scraped_registry)
    )
    result_relay = providers.Singleton(
        InMemoryResultRelay,
        settings.provided.result_channel.max_slots,
        settings.provided.result_channel.slot_ttl_secs,
    )
    cipher = providers.Singleton(_cipher, settings, environ)
    signer = providers.Singleton(_signer, store, cipher, clock, settings.provided.state_dir)
    result_store = providers.Singleton(_result_store, settings, store)
    fresh_results = providers.Singleton(FreshResults)
    classifier = providers.Singleton(SqlglotClassifier)

    readiness = providers.Singleton(StoreReadiness, store)
    roles = providers.Singleton(RoleDirectory, settings.provided.auth)
    authenticator = providers.Singleton(
        Authenticator,
        store=store,
        clock=clock,
        new_id=providers.Object(new_uuid),
        roles=roles,
        cache=principal_cache,
    )
    tokens = providers.Singleton(
        TokenService,
        store=store,
        clock=clock,
        new_id=providers.Object(new_uuid),
        random_bytes=providers.Object(secrets.token_bytes),
        settings=settings,
        roles=roles,
    )
    cancel_request = providers.Singleton(
        CancelRequest,
        store=store,
        clock=clock,
        notifier=notifier,
        new_id=providers.Object(new_uuid),
    )
    users = providers.Singleton(
        UserService,
        store=store,
        clock=clock,
        new_id=providers.Object(new_uuid),
        random_bytes=providers.Object(secrets.token_bytes),
        roles=roles,
        on_user_disabled=cancel_request.provided.cancel_all_of,
    )
    audit_queries = providers.Singleton(AuditQueries, store)
    audit_integrity = providers.Singleton(AuditIntegrity, store=store, signer=signer)
    audit_maintenance = providers.Singleton(
        AuditMaintenance,
        store=store,
        settings=settings,
        signer=signer,
        new_id=providers.Object(new_uuid),
    )
    bootstrapper = providers.Singleton(
        Bootstrapper,
        store=store,
        clock=clock,
        new_id=providers.Object(new_uuid),
        random_bytes=providers.Object(secrets.token_bytes),
        files=providers.Singleton(LocalSecretFiles),
        cipher=cipher,
    )
    requests = providers.Singleton(
        RequestUseCases,
        create_request=providers.Singleton(
            CreateRequest,
            store=store,
            settings=settings,
            clock=clock,
            classifier=classifier,
            notifier=notifier,
            draining=draining.provided.is_set,
            new_id=providers.Object(new_uuid),
            metrics=metrics,
        ),
        get_request=providers.Singleton(
            GetRequest,
            store=store,
            clock=clock,
            notifier=notifier,
            draining=draining.provided.is_set,
            calls=store_calls,
        ),
        list_requests=providers.Singleton(ListRequests, store=store),
        cancel_request=cancel_request,
        wait_for_result=providers.Singleton(
            WaitForResult,
            store=store,
            settings=settings,
            notifier=notifier,
            result_store=result_store,
            result_relay=result_relay,
            draining=draining.provided.is_set,
            calls=store_calls,
            fresh=fresh_results,
        ),
        get_result_content=providers.Singleton(
            GetResultContent,
            store=store,
            settings=settings,
            clock=clock,
            result_store=result_store,
            result_relay=result_relay,
        ),
        list_executions=providers.Singleton(ListExecutions, store=store),
        resume_request=providers.Singleton(
            ResumeRequest,
            store=store,
            settings=settings,
            clock=clock,
            notifier=notifier,
            new_id=providers.Object(new_uuid),
        ),
    )
    approvals = providers.Singleton(
        ApprovalUseCases,
        approve_request=providers.Singleton(
            ApproveRequest,
            store=store,
            settings=settings,
            clock=clock,
            notifier=notifier,
            new_id=providers.Object(new_uuid),
        ),
        reject_request=providers.Singleton(
            RejectRequest,
            store=store,
            clock=clock,
            notifier=notifier,
            new_id=providers.Object(new_uuid),
        ),
    )
    claim_job = providers.Singleton(
        ClaimJob,
        store=store,
        settings=settings,
        clock=clock,
        signer=signer,
        notifier=notifier,
        draining=draining.provided.is_set,
        new_id=providers.Object(new_uuid),
        metrics=metrics,
    )
    agents = providers.Singleton(
        AgentUseCases,
        get_public_key=providers.Singleton(GetPublicKey, signer=signer),
        poll_for_work=providers.Singleton(
            PollForWork,
            store=store,
            settings=settings,
            clock=clock,
            notifier=notifier,
            server_version=version,
            draining=draining.provided.is_set,
            new_id=providers.Object(new_uuid),
            calls=store_calls,
            claim_job=claim_job,
        ),
        claim_job=claim_job,
        record_heartbeat=providers.Singleton(RecordHeartbeat, store=store, clock=clock),
        submit_result=providers.Singleton(
            SubmitResult,
            store=store,
            settings=settings,
            clock=clock,
            notifier=notifier,
            result_store=result_store,
            result_relay=result_relay,
            new_id=providers.Object(new_uuid),
            fresh=fresh_results,
        ),
        sync_schema=providers.Singleton(
            SyncSchema,
            store=store,
            settings=settings,
            clock=clock,
            new_id=providers.Object(new_uuid),
        ),
        claim_dry_run_job=providers.Singleton(
            ClaimDryRunJob, store=store, clock=clock, new_id=providers.Object(new_uuid)
        ),
        submit_dry_run_result=providers.Singleton(
            SubmitDryRunResult, store=store, clock=clock, notifier=notifier
        ),
        submit_preflight_result=providers.Singleton(
            SubmitPreflightResult, store=store, clock=clock, notifier=notifier
        ),
        list_agents=providers.Singleton(ListAgents, store=store, clock=clock),
    )
    configuration = providers.Singleton(
        ConfigUseCases,
        workflows=providers.Singleton(ListWorkflows, settings=settings),
        policies=providers.Singleton(ListPolicies, settings=settings),
        roles=providers.Singleton(ListRoles, roles=roles),
        groups=providers.Singleton(ListGroups, store=store, auth=settings.provided.auth),
        databases=providers.Singleton(ListDatabases, store=store, settings=settings, clock=clock),
    )
    judge = providers.Singleton(JudgeSql, store=store, settings=settings, classifier=classifier)
    preflight = providers.Singleton(
        PreflightUseCases,
        run_preflight=providers.Singleton(
            RunPreflight,
            store=store,
            settings=settings,
            clock=clock,
            classifier=classifier,
            notifier=notifier,
            judge=judge,
            new_id=providers.Object(new_uuid),
        ),
        resolve_policies=providers.Singleton(ResolvePolicies, settings=settings),
        get_schema=providers.Singleton(GetSchema, store=store),
    )
    sweeps = providers.Singleton(
        ServerSweeps,
        store=store,
        settings=settings,
        notifier=notifier,
        new_id=providers.Object(new_uuid),
        metrics=metrics,
    )
    retention_sweeps = providers.Singleton(
        RetentionSweeps,
        store=store,
        settings=settings,
        result_store=result_store,
        new_id=providers.Object(new_uuid),
    )
    list_results = providers.Singleton(ListResults, store=store, settings=settings)
    webhook_transport = providers.Singleton(
        HttpxWebhookTransport,
        timeout_secs=settings.provided.webhooks.timeout_secs,
        allow_private_networks=settings.provided.webhooks.allow_private_networks,
    )
    webhook_sender = providers.Singleton(
        WebhookSender,
        store=store,
        settings=settings.provided.webhooks,
        transport=webhook_transport,
        clock=clock,
        new_id=providers.Object(new_uuid),
        metrics=metrics,
    )
    webhooks = providers.Singleton(
        WebhookUseCases,
        webhooks=providers.Singleton(ListWebhooks, settings.provided.webhooks),
        deliveries=providers.Singleton(ListWebhookDeliveries, store),
    )
    console = providers.Singleton(
        ConsoleUseCases,
        sessions=providers.Singleton(
            ConsoleSessions,
            store=store,
            cipher=cipher,
            clock=clock,
            authenticate=authenticator.provided.authenticate,
            new_id=providers.Object(new_uuid),
            random_bytes=providers.Object(secrets.token_bytes),
        ),
        requests=requests,
        approvals=approvals,
        run_preflight=preflight.provided.run_preflight,
        list_databases=configuration.provided.databases,
        list_agents=agents.provided.list_agents,
        audit_queries=audit_queries,
        audit_integrity=audit_integrity,
        get_schema=preflight.provided.get_schema,
        clock=clock,
    )
    sweep_runner = providers.Singleton(
        SweepRunner,
        sweeps,
        settings,
        clock,
        extra_jobs=providers.Callable(_sweep_schedule, retention_sweeps, audit_maintenance),
    )


def build_app(container: ServerContainer) -> FastAPI:
    """The FastAPI app, with the sweeps running for as long as the app is served."""
    settings: ServerSettings = container.settings()
    version: str = container.version()
    draining: Draining = container.draining()
    runner: SweepRunner = container.sweep_runner()
    sender: WebhookSender = container.webhook_sender()
    transport: HttpxWebhookTransport = container.webhook_transport()
    wake_channel: PostgresWakeChannel | None = container.wake_channel()
    store_calls: StoreCalls = container.store_calls()
    checkpointer: WalCheckpointer | None = container.wal_checkpointer()

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if wake_channel is not None:
            wake_channel.start()
        if checkpointer is not None:
            checkpointer.start()
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop))
        sending = asyncio.create_task(sender.run(stop))
        try:
            yield
        finally:
            await mcp_endpoint.close()
            stop.set()
            await task
            await sending
            transport.close()
            if wake_channel is not None:
                await asyncio.to_thread(wake_channel.close)
            if checkpointer is not None:
                await asyncio.to_thread(checkpointer.stop)

    app = create_app(
        # Routes are matched in order, each miss a regex match: the agent's and the
        # requests' routes, which every request goes through, come first (no path of
        # theirs is also another router's).
        routers=[
            build_agent_router(container.agents(), is_draining=draining.is_set, calls=store_calls),
            build_request_router(container.requests(), store_calls),
            build_identity_router(
                tokens=container.tokens(),
                users=container.users(),
                audit=container.audit_queries(),
                audit_integrity=container.audit_integrity(),
                readiness=container.readiness(),
                min_agent_version=settings.min_agent_version,
                version=version,
                is_draining=draining.is_set,
            ),
            build_approval_router(container.approvals()),
            build_result_router(container.list_results()),
            build_config_router(container.configuration()),
            build_preflight_router(container.preflight()),
            build_metrics_router(container.view_metrics()),
            build_webhook_router(container.webhooks()),
        ],
        authenticate=container.authenticator().authenticate,
        authenticate_cached=container.authenticator().cached,
        version=version,
        body_limit_for=agent_body_limit(settings),
        lifespan=lifespan,
        metrics=container.metrics(),
        store_calls=store_calls,
    )

    # `/mcp` (docs/mcp.md §2.2): the MCP tools, calling this very app in-process. The SDK is
    # imported on the first call only (see `StartedOnFirstCall`).
    def build_mcp_sessions() -> McpSessions:
        from adapters.mcp.in_process import (  # noqa: PLC0415
            in_process_api,
            streamable_http_sessions,
        )
        from adapters.mcp.server import build_mcp_server  # noqa: PLC0415
        from adapters.mcp.tools import fingerprint_with  # noqa: PLC0415

        mcp_server = build_mcp_server(
            in_process_api(app, user_agent=f"dbward-mcp/{version}"),
            version=version,
            fingerprint=fingerprint_with(container.classifier().redact),
        )
        return streamable_http_sessions(mcp_server)

    mcp_endpoint = StartedOnFirstCall(build_mcp_sessions)
    mount_mcp(app, mcp_endpoint)
    mount_console(app, container.console())  # `/ui` (docs/console.md)
    return app
