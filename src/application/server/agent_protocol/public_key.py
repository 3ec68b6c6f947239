"""`GET /api/public-key`: the key an agent verifies execution tokens with.

The agent fetches it once at startup and checks every claim's token against it, so only
a holder of the server's private key can make the agent run a statement.
"""

from __future__ import annotations

from application.server.ports.services import ExecutionTokenSigner
from domain.server.rbac import Permission, Principal, authorize

__all__ = ["GetPublicKey"]


class GetPublicKey:
    """The server's Ed25519 public key, as 64 hex characters, for agents only."""

    def __init__(self, *, signer: ExecutionTokenSigner) -> None:
        self._signer = signer

    def get(self, principal: Principal) -> str:
        authorize(principal, Permission.AGENT_OPERATE)
        return self._signer.public_key_hex()
