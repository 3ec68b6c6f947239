"""The relay that carries a result body from the agent side to a waiting client."""

from __future__ import annotations

from typing import Protocol


class ResultRelay(Protocol):
    """Result bodies that are delivered but not persisted (`delivery_mode = "stream"`,
    or a request created with `no_store`).

    The agent protocol `put`s the body when the result arrives; the request use cases
    `get` it for the client. Best effort by design: a body may be gone (evicted or
    expired) when it is asked for, and `get` then answers None; a client that misses it
    still gets the persisted summary, just without the rows. Called from worker threads.
    """

    def put(self, execution_id: str, result_data: str) -> None: ...

    def get(self, execution_id: str) -> str | None: ...
