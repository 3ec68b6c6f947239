"""First start: the bootstrap users, tokens and token files (`docs/server.md`, First start).

Our changes to dbward 0.2, each deliberate:

* The requester bootstrap token is a real requester-only token (ceiling `[requester]`),
  not a copy of the admin token.
* A first start is recognised by the absence of any bootstrap token row, so bootstrap
  tokens an operator revoked on purpose are not silently re-created at the next start.
* The tokens are also kept in the store, sealed with the key-encryption key (docs/server.md
  §7.4), so every replica writes the token files into its own state dir, and a state dir
  lost or replaced gets them back at the next start. Token files from a server before
  schema version 4 are imported into the store once, at the first start that finds them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from application.server.identity.events import identity_event, token_created_event
from application.server.identity.issuing import issue_token
from application.server.ports.identity import SecretFiles, UserRecord
from application.server.ports.services import SecretCipher, ServerClock
from application.server.ports.store import Store, StoreSession
from domain.server.api_tokens import ProvisioningKind, SubjectType, token_hash
from domain.server.audit import AuditEvent
from domain.server.rbac import ADMIN, AGENT_DEFAULT, REQUESTER

__all__ = ["BootstrapAction", "BootstrapError", "BootstrapOutcome", "Bootstrapper"]


class BootstrapError(RuntimeError):
    """The store and the state dir disagree: the server must not start (exit with this)."""


class BootstrapAction(StrEnum):
    CREATED = "created"
    ROTATED = "rotated"
    EXISTING = "existing"
    #: Every bootstrap token was revoked by an operator: left alone, no files written.
    REVOKED = "revoked"


@dataclass(frozen=True)
class _BootstrapToken:
    name: str
    file: str
    subject_type: SubjectType
    subject_id: str
    ceiling: tuple[str, ...] | None


BOOTSTRAP_USERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("admin", (ADMIN, REQUESTER)),
    ("agent", (AGENT_DEFAULT,)),
)
BOOTSTRAP_TOKENS: tuple[_BootstrapToken, ...] = (
    _BootstrapToken(
        "bootstrap-admin", "admin-token", SubjectType.USER, "admin", (ADMIN, REQUESTER)
    ),
    _BootstrapToken("bootstrap-agent", "agent-token", SubjectType.AGENT, "agent", None),
    _BootstrapToken(
        "bootstrap-requester", "requester-token", SubjectType.USER, "admin", (REQUESTER,)
    ),
)
FORCE_HINT = (
    "restart the server once with --force-bootstrap to revoke the bootstrap tokens and "
    "write new ones"
)


@dataclass(frozen=True)
class BootstrapOutcome:
    action: BootstrapAction
    #: The token files written: all of them when created or rotated; for existing tokens,
    #: those that were missing or stale in this state dir, rewritten from the store.
    files: tuple[Path, ...] = ()
    revoked_tokens: tuple[str, ...] = ()


def _secret_name(spec: _BootstrapToken) -> str:
    """The `server_secrets` row holding a bootstrap token, sealed."""
    return f"token:{spec.name}"


class _BootstrapRaced(Exception):
    """Another server bootstrapped the store between our check and our write."""


class Bootstrapper:
    """First-start users, tokens and token files (docs/server.md §4.5, §11.17).

    The store is written first and the files after: a crash in between leaves active
    tokens without files, which the next start reports (fatal, with the `--force-bootstrap`
    hint) instead of leaving files that hold tokens the store does not know.
    """

    def __init__(
        self,
        store: Store,
        clock: ServerClock,
        new_id: Callable[[], str],
        random_bytes: Callable[[int], bytes],
        files: SecretFiles,
        cipher: SecretCipher,
    ) -> None:
        self._store = store
        self._clock = clock
        self._new_id = new_id
        self._random_bytes = random_bytes
        self._files = files
        self._cipher = cipher

    def bootstrap(self, state_dir: Path, *, force: bool = False) -> BootstrapOutcome:
        if not force:
            outcome = self._check_existing(state_dir)
            if outcome is not None:
                return outcome
        try:
            return self._issue_all(state_dir, force=force)
        except _BootstrapRaced:
            outcome = self._check_existing(state_dir)
            if outcome is None:  # pragma: no cover - the race left no bootstrap row at all
                raise BootstrapError("bootstrap raced with another server; restart") from None
            return outcome

    def _check_existing(self, state_dir: Path) -> BootstrapOutcome | None:
        with self._store.read() as session:
            active = session.identity.active_bootstrap_tokens()
            ever = session.identity.count_bootstrap_tokens()
            sealed = {
                spec.name: session.secrets.get(_secret_name(spec)) for spec in BOOTSTRAP_TOKENS
            }
        if not active:
            return None if ever == 0 else BootstrapOutcome(BootstrapAction.REVOKED)
        by_name = {token.name or "": token for token in active}
        expected = {spec.name for spec in BOOTSTRAP_TOKENS}
        if set(by_name) != expected or len(active) != len(BOOTSTRAP_TOKENS):
            raise BootstrapError(
                f"incomplete bootstrap state: {len(active)} of {len(BOOTSTRAP_TOKENS)} "
                f"bootstrap tokens are active ({', '.join(sorted(by_name))}); {FORCE_HINT}"
            )
        missing: list[str] = []
        stale: list[str] = []
        to_import: list[tuple[_BootstrapToken, str]] = []
        written: list[Path] = []
        for spec in BOOTSTRAP_TOKENS:
            path = state_dir / spec.file
            expected_hash = by_name[spec.name].token_hash
            text = self._files.read_secret(path)
            on_disk = None if text is None else text.strip()
            kept = sealed[spec.name]
            stored = None if kept is None else self._cipher.open(_secret_name(spec), kept).decode()
            if stored is not None and token_hash(stored) == expected_hash:
                if on_disk != stored:
                    self._files.write_secret(path, stored)
                    written.append(path)
            elif on_disk is None:
                missing.append(str(path))
            elif token_hash(on_disk) != expected_hash:
                stale.append(str(path))
            else:
                to_import.append((spec, on_disk))
        if missing:
            raise BootstrapError(
                f"bootstrap token file(s) missing: {', '.join(missing)}, and the store "
                f"holds no sealed copy to write them again from; {FORCE_HINT}"
            )
        if stale:
            raise BootstrapError(
                f"bootstrap token file(s) do not hold the active token: {', '.join(stale)}; "
                f"{FORCE_HINT}"
            )
        if to_import:
            now = self._clock.now()
            with self._store.write() as session:
                for spec, raw in to_import:
                    name = _secret_name(spec)
                    session.secrets.put(name, self._cipher.seal(name, raw.encode()), now)
        return BootstrapOutcome(BootstrapAction.EXISTING, tuple(written))

    def _issue_all(self, state_dir: Path, *, force: bool) -> BootstrapOutcome:
        now = self._clock.now()
        issued = [
            (
                spec,
                *issue_token(
                    random_bytes=self._random_bytes,
                    new_id=self._new_id,
                    subject_type=spec.subject_type,
                    subject_id=spec.subject_id,
                    ceiling=spec.ceiling,
                    name=spec.name,
                    kind=ProvisioningKind.BOOTSTRAP,
                    expires_at=None,
                    now=now,
                ),
            )
            for spec in BOOTSTRAP_TOKENS
        ]
        revoked: list[str] = []
        with self._store.write() as session:
            repo = session.identity
            repo.serialize_identity_changes()
            if not force and repo.count_bootstrap_tokens() > 0:
                raise _BootstrapRaced
            for old in repo.active_bootstrap_tokens():
                if repo.revoke_token(old.id, now):
                    revoked.append(old.id)
                    session.audit.append(
                        identity_event(
                            self._new_id,
                            now,
                            "token.revoked",
                            None,
                            ("token", old.id),
                            {"name": old.name, "subject_id": old.subject_id},
                            reason="force-bootstrap",
                        )
                    )
            for user_id, roles in BOOTSTRAP_USERS:
                self._ensure_user(session, user_id, roles, now)
            for spec, raw, record in issued:
                repo.add_token(record)
                session.audit.append(token_created_event(self._new_id, now, None, record))
                name = _secret_name(spec)
                session.secrets.put(name, self._cipher.seal(name, raw.encode()), now)
        written: list[Path] = []
        for spec, raw, _record in issued:
            path = state_dir / spec.file
            self._files.write_secret(path, raw)
            written.append(path)
        action = BootstrapAction.ROTATED if force else BootstrapAction.CREATED
        return BootstrapOutcome(action, tuple(written), tuple(revoked))

    def _ensure_user(
        self, session: StoreSession, user_id: str, roles: tuple[str, ...], now: datetime
    ) -> None:
        repo = session.identity
        user = repo.get_user(user_id)
        if user is None:
            repo.add_user(UserRecord(id=user_id, roles=roles, created_at=now, updated_at=now))
            session.audit.append(self._event("user.created", now, user_id, {"roles": list(roles)}))
            return
        # --force-bootstrap is the way back in: the bootstrap users work again afterwards.
        if not user.can_authenticate and repo.restore_user(user_id, now):
            session.audit.append(self._event("user.activated", now, user_id, {}))
        missing = [role for role in roles if role not in user.roles]
        if missing:
            repo.set_roles(user_id, (*user.roles, *missing), now)
            session.audit.append(
                self._event("user.updated", now, user_id, {"roles_added": missing})
            )

    def _event(
        self, event_type: str, now: datetime, user_id: str, metadata: Mapping[str, Any]
    ) -> AuditEvent:
        return identity_event(
            self._new_id, now, event_type, None, ("user", user_id), metadata, reason="bootstrap"
        )
