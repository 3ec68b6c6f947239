"""Cancel tokens: reasons and waking waiters."""

from __future__ import annotations

from application.agent.cancellation import CancelReason, CancelToken


def test_cancel_token_fires_its_callbacks_once() -> None:
    token = CancelToken()
    fired: list[str] = []
    token.on_cancel(lambda: fired.append("kill"))
    assert token.cancel(CancelReason.SERVER_CANCELLED) is True
    assert token.cancel(CancelReason.LEASE_LOST) is False
    assert fired == ["kill"]
    assert token.cancelled
    assert token.reason is CancelReason.SERVER_CANCELLED
    assert token.event.is_set()


def test_cancel_token_registering_after_cancel_fires_at_once() -> None:
    token = CancelToken()
    token.cancel(CancelReason.SHUTDOWN)
    fired: list[str] = []
    token.on_cancel(lambda: fired.append("kill"))
    assert fired == ["kill"]


def test_cancel_token_unregistered_callback_does_not_fire() -> None:
    token = CancelToken()
    fired: list[str] = []
    unregister = token.on_cancel(lambda: fired.append("kill"))
    unregister()
    token.cancel(CancelReason.SERVER_CANCELLED)
    assert fired == []
