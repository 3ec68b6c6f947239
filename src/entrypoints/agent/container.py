"""Composition root of the agent: the one place that knows every concrete class."""

from __future__ import annotations

import random

from dependency_injector import containers, providers
from prometheus_client import CollectorRegistry

from adapters.crypto.ed25519_verifier import Ed25519Verifier
from adapters.files.probes import FileProbes
from adapters.metrics.agent import DatabaseHealthGauge, PrometheusAgentMetrics
from adapters.server_client.client import HttpServerClient
from adapters.system_clock import SystemClock
from application.agent.database_registry import DatabaseRegistry
from application.agent.metrics import NO_AGENT_METRICS, AgentMetrics, database_up
from application.agent.runner import Agent, AgentPorts
from application.agent.settings import AgentSettings
from entrypoints.agent.database_drivers import open_database


def _metrics_registry(registry: DatabaseRegistry) -> CollectorRegistry:
    """One registry per agent (never prometheus_client's global one)."""
    metrics_registry = CollectorRegistry()
    metrics_registry.register(DatabaseHealthGauge(lambda: database_up(registry)))
    return metrics_registry


def _metrics(settings: AgentSettings, registry: CollectorRegistry) -> AgentMetrics:
    """Counted only when served: without `metrics_listen` nobody could read them."""
    if settings.metrics_listen is None:
        return NO_AGENT_METRICS
    return PrometheusAgentMetrics(registry)


class AgentContainer(containers.DeclarativeContainer):
    settings = providers.Dependency(instance_of=AgentSettings)
    agent_build = providers.Object("unknown")

    clock = providers.Singleton(SystemClock)
    random = providers.Singleton(random.SystemRandom)
    server = providers.Singleton(
        HttpServerClient,
        base_url=settings.provided.server.url,
        agent_token=settings.provided.server.agent_token,
        agent_build=agent_build,
        agent_id=settings.provided.agent_id,
    )
    verifier = providers.Singleton(Ed25519Verifier, pinned_hex=settings.provided.server.public_key)
    probes = providers.Singleton(
        FileProbes,
        settings.provided.liveness_probe_path,
        settings.provided.readiness_probe_path,
    )
    database_factory = providers.Object(open_database)
    registry = providers.Singleton(
        DatabaseRegistry,
        databases=settings.provided.databases,
        factory=database_factory,
        clock=clock,
    )
    metrics_registry = providers.Singleton(_metrics_registry, registry)
    ports = providers.Factory(
        AgentPorts,
        server=server,
        verifier=verifier,
        probes=probes,
        clock=clock,
        random=random,
        metrics=providers.Singleton(_metrics, settings, metrics_registry),
    )
    agent = providers.Singleton(Agent, settings, ports, registry, agent_build=agent_build)
