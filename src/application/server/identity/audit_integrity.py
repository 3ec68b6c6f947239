"""`GET /api/audit/head` and `GET /api/audit/verify[?anchor=…]` (permission `audit.read`).

docs/server.md §6.4-§6.6. The head is signed with the server's Ed25519 key, so a verifier
who keeps it (an *anchor*) can later prove that the chain still holds that event, at that
position, with that hash: rewriting the newest events and recomputing their hashes, which
the hash chain alone cannot reveal, then fails verification. The walk itself, with its
purge boundary and signed checkpoints, is `domain.server.audit_integrity.verify_chain`.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING

from application.server.ports.services import AuditSigner
from domain.server.audit_integrity import (
    Anchor,
    ChainHead,
    ChainVerdict,
    anchor_message,
    key_id_of,
    verify_chain,
)
from domain.server.errors import Gone, NotFound, Validation
from domain.server.rbac import Permission, Principal, authorize

if TYPE_CHECKING:
    from application.server.ports.store import Store

__all__ = ["AuditIntegrity", "SignedHead"]


@dataclass(frozen=True)
class SignedHead:
    head: ChainHead
    anchor: Anchor
    public_key_hex: str


class AuditIntegrity:
    """Signs the chain head and verifies the chain, optionally against an earlier anchor."""

    def __init__(self, *, store: Store, signer: AuditSigner) -> None:
        self._store = store
        self._signer = signer

    @property
    def key_id(self) -> str:
        return key_id_of(self._signer.public_key_hex())

    def head(self, principal: Principal) -> SignedHead:
        authorize(principal, Permission.AUDIT_READ)
        with self._store.read() as session:
            head = session.audit.head()
        if head is None:
            raise NotFound("the audit log is empty", resource="audit_event")
        signature = self._signer.sign(anchor_message(head.event_id, head.event_hash, head.position))
        anchor = Anchor(head.event_id, head.event_hash, head.position, self.key_id, signature)
        return SignedHead(head, anchor, self._signer.public_key_hex())

    def verify(self, principal: Principal, anchor_text: str | None = None) -> ChainVerdict:
        """The chain's verdict; with an anchor, also whether it still holds the anchored head.

        An anchor this server's key did not sign is a 400 (it proves nothing either way);
        one whose event retention has purged is a 410 (take a newer anchor).
        """
        authorize(principal, Permission.AUDIT_READ)
        anchor = None if anchor_text is None else self._checked(Anchor.decode(anchor_text))
        with self._store.read() as session:
            verdict = verify_chain(
                session.audit.chain(),
                purge_boundary=session.audit.purge_checkpoint_for,
                signature_ok=self._signer.verify,
                anchor=anchor,
            )
        if anchor is not None and verdict.anchor_purged:
            raise Gone(
                f"the anchored event (position {anchor.position}) was purged by audit "
                "retention; take a newer anchor from GET /api/audit/head"
            )
        return verdict

    def _checked(self, anchor: Anchor) -> Anchor:
        if not hmac.compare_digest(anchor.key_id, self.key_id):
            raise Validation(
                f"the anchor was signed by key {anchor.key_id}, not by this server's key "
                f"{self.key_id}"
            )
        if not self._signer.verify(anchor.message, anchor.signature):
            raise Validation("the anchor's signature is not valid for this server's key")
        return anchor
