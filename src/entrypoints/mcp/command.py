"""`dbward mcp`: the MCP tools on stdin/stdout for a desktop assistant (docs/mcp.md §2.1).

The assistant starts this process; it authenticates with the client config the CLI uses
(`--config`, `DBWARD_SERVER_URL` / `DBWARD_TOKEN`, resolved the same way) and talks to the
dbward server over its HTTP API. Stdout carries MCP messages only: problems go to stderr.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from mcp.server.mcpserver import Context

from adapters.cli_client.api_client import ApiClient
from adapters.config.client import ClientConfig, ClientConfigError
from adapters.mcp.server import OpenApi, build_mcp_server
from adapters.mcp.tools import DbwardApi, fingerprint_with
from adapters.sql_review.sqlglot_classifier import SqlglotClassifier
from entrypoints.admin.output import load_client_config
from entrypoints.version import package_version


def _network_api(config: ClientConfig, user_agent: str) -> OpenApi:
    @contextmanager
    def open_api(_ctx: Context) -> Iterator[DbwardApi]:
        with ApiClient(
            config.server_url, config.token, user_agent=user_agent, channel="mcp"
        ) as api:
            yield api

    return open_api


def serve_stdio(config_path: Path | None) -> int:
    """Serve until the assistant closes stdin; 1 when the client config cannot be used."""
    try:
        client_config = load_client_config(config_path)
    except ClientConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        return 1
    if not client_config.allow_insecure:
        for warning in client_config.warnings:
            typer.echo(f"warning: {warning}", err=True)
    version = package_version()
    server = build_mcp_server(
        _network_api(client_config, f"dbward-mcp/{version}"),
        version=version,
        fingerprint=fingerprint_with(SqlglotClassifier().redact),
        default_environment=client_config.default_environment,
    )
    server.run("stdio")
    return 0
