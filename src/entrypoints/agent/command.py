"""`dbward agent`: load the config, install signal handlers, run, exit with the agent's code."""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

from adapters.config.agent import is_local_host, load_agent_settings, render_effective_config
from adapters.metrics.exposition import MetricsListener
from application.agent.runner import Agent
from domain.shared.errors import ConfigError, DbwardError
from entrypoints.agent.container import AgentContainer
from entrypoints.logging_setup import configure_logging
from entrypoints.version import package_version

log = logging.getLogger("dbward.agent")


def check_config(config_path: Path) -> int:
    """Print the effective configuration (secrets redacted); 0 if valid, 1 with the error."""
    try:
        settings = load_agent_settings(config_path, os.environ)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(render_effective_config(settings))
    print(f"# {config_path}: configuration is valid", file=sys.stderr)
    return 0


def run_agent(config_path: Path) -> int:
    configure_logging(os.environ)
    try:
        settings = load_agent_settings(config_path, os.environ)
        # log_format applies from here on; DBWARD_LOG_FORMAT still wins.
        configure_logging(os.environ, log_format=settings.log_format)
        container = AgentContainer(settings=settings, agent_build=package_version())
        agent: Agent = container.agent()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except DbwardError as exc:
        log.error("cannot start: %s", exc)
        return 1
    listener: MetricsListener | None = None
    if settings.metrics_listen is not None:
        try:
            listener = MetricsListener.start(settings.metrics_listen, container.metrics_registry())
        except OSError as exc:
            log.error("cannot serve metrics on %s: %s", settings.metrics_listen, exc)
            return 1
        log.info("metrics (no authentication) on http://%s/metrics", settings.metrics_listen)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s", signal.Signals(signum).name)
        agent.request_shutdown()

    server_url = urlsplit(agent.settings.server.url)
    if server_url.scheme == "http" and not is_local_host(server_url.hostname or ""):
        log.warning(
            "the server URL uses plain HTTP to a non-local host: the agent token travels "
            "in cleartext (allowed by allow_insecure)"
        )
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info(
        "dbward agent %s (protocol 0.2.0), server %s, databases: %s",
        package_version(),
        agent.settings.server.url,
        ", ".join(str(scope) for scope in agent.settings.scopes),
    )
    try:
        return agent.run()
    finally:
        if listener is not None:
            listener.stop()
