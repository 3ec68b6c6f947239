"""`dbward server`: load the config, migrate the store, bootstrap, serve until a signal.

On SIGTERM/SIGINT the server drains first: held agent polls answer at once with no jobs,
result streams end, new requests and claims get 503; then uvicorn stops accepting
connections and waits for the requests in flight.
"""

from __future__ import annotations

import logging
import os
import stat
import sys
from dataclasses import replace
from pathlib import Path
from types import FrameType

import uvicorn
from sqlalchemy.exc import SQLAlchemyError

from adapters.config.server import load_server_settings
from adapters.crypto.ed25519_signer import SigningKeyError
from adapters.crypto.key_encryption import KeyEncryptionKeyError
from adapters.crypto.key_files import PrivateFileError
from adapters.metrics.exposition import MetricsListener
from adapters.store.migrations import SchemaVersionError, migrate
from application.server.identity.bootstrap import BootstrapAction, BootstrapError
from application.server.ports.services import SecretUnreadable
from application.server.settings import ServerSettings
from domain.shared.errors import ConfigError
from domain.shared.listen import LISTEN_EXAMPLE, parse_listen
from entrypoints.logging_setup import configure_logging
from entrypoints.server.container import ServerContainer, build_app
from entrypoints.version import package_version

log = logging.getLogger("dbward.server")

#: How long uvicorn waits for requests in flight after the server stopped accepting.
GRACEFUL_SHUTDOWN_SECS = 10


class DrainingServer(uvicorn.Server):
    """uvicorn, but a shutdown signal first releases long-polls and refuses new work."""

    def __init__(self, config: uvicorn.Config, container: ServerContainer) -> None:
        super().__init__(config)
        self._container = container

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        draining = self._container.draining()
        if not draining.is_set():
            log.info("shutting down: draining (polls get no jobs, new requests get 503)")
            draining.event.set()
            self._container.notifier().notify_all()
        super().handle_exit(sig, frame)
        # uvicorn re-raises captured signals after shutting down, so the process would end
        # "killed by SIGTERM"; a completed graceful shutdown exits 0 instead.
        self._captured_signals.clear()


def _with_listen(settings: ServerSettings, listen: str | None) -> ServerSettings:
    if listen is None:
        return settings
    if parse_listen(listen) is None:
        raise ConfigError(f"--listen: expected {LISTEN_EXAMPLE}, got {listen!r}")
    return replace(settings, listen=listen)


#: Owner-only: the SQLite store (and its WAL files), a generated key-encryption key,
#: bootstrap token files, result files. Set before the server creates anything.
SERVER_UMASK = 0o077


def prepare_state_dir(state_dir: Path) -> None:
    """Create the state dir (0700) under the server's umask; warn, never chmod, when an
    existing one is open to group or others: it is the user's directory."""
    os.umask(SERVER_UMASK)
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    mode = stat.S_IMODE(state_dir.stat().st_mode)
    if mode & 0o077:
        log.warning(
            "the state dir %s is accessible to group or others (mode %04o); it holds the "
            "store, the key-encryption key and tokens: consider chmod 700",
            state_dir,
            mode,
        )


def run_server(config_path: Path, *, listen: str | None, force_bootstrap: bool) -> int:
    os.umask(SERVER_UMASK)  # before anything is created, log files included
    configure_logging(os.environ)
    try:
        settings = _with_listen(load_server_settings(config_path, os.environ), listen)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    # [logging] applies from here on; DBWARD_LOG_LEVEL / DBWARD_LOG_FORMAT still win.
    configure_logging(
        os.environ, level=settings.logging.level, log_format=settings.logging.format.value
    )
    for warning in settings.warnings:
        log.warning("%s", warning)
    logging.getLogger("sqlglot").setLevel(logging.ERROR)

    version = package_version()
    try:
        # The state dir holds the bootstrap token files (and, with SQLite, the store and
        # its key-encryption key): owner only.
        prepare_state_dir(settings.state_dir)
    except OSError as exc:
        log.error("cannot create the state dir %s: %s", settings.state_dir, exc)
        return 1
    container = ServerContainer(settings=settings, version=version, environ=os.environ)
    try:
        container.cipher()  # no key-encryption key: refuse before touching the store
        migrate(container.store().engine)
        container.signer()  # creates, imports or opens the signing key now, not at a claim
        outcome = container.bootstrapper().bootstrap(settings.state_dir, force=force_bootstrap)
    except (
        SchemaVersionError,
        BootstrapError,
        ConfigError,
        SigningKeyError,
        KeyEncryptionKeyError,
        PrivateFileError,
        SecretUnreadable,
    ) as exc:
        log.error("cannot start: %s", exc)
        return 1
    except SQLAlchemyError as exc:
        log.error("cannot open the store %s: %s", settings.store, exc.__class__.__name__)
        log.debug("store error", exc_info=True)
        return 1
    if outcome.action in (BootstrapAction.CREATED, BootstrapAction.ROTATED):
        log.info(
            "bootstrap tokens %s: %s",
            outcome.action.value,
            ", ".join(str(path) for path in outcome.files),
        )
    elif outcome.files:
        log.info(
            "bootstrap token files written from the store: %s",
            ", ".join(str(path) for path in outcome.files),
        )
    app = build_app(container)
    config = uvicorn.Config(
        app,
        host=settings.listen_host,
        port=settings.listen_port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECS,
    )
    listener = None
    if settings.metrics.listen is not None:
        try:
            listener = MetricsListener.start(settings.metrics.listen, container.scraped_registry())
        except OSError as exc:
            log.error("cannot serve metrics on %s: %s", settings.metrics.listen, exc)
            return 1
        log.info("metrics (no authentication) on http://%s/metrics", settings.metrics.listen)
    log.info("dbward server %s listening on http://%s", version, settings.listen)
    server = DrainingServer(config, container)
    try:
        server.run()
    finally:
        if listener is not None:
            listener.stop()
        container.store().close()
    return 0 if server.started else 1
