"""Errors both database adapters (PostgreSQL, MySQL) share: the net they spread under
their `DatabasePort` methods, so a caller sees `DatabaseError` types and nothing else, and
the one refusal of transaction control in a read-only plan."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from domain.agent.errors import DatabaseError
from domain.shared.errors import DbwardError

__all__ = [
    "TRANSACTION_CONTROL_REFUSED",
    "TransactionControlRefused",
    "only_database_errors_logged_to",
]

TRANSACTION_CONTROL_REFUSED = (
    "query failed: transaction control is not allowed in a read-only query"
)


class TransactionControlRefused(DatabaseError):
    """A SELECT plan ended or replaced the read-only transaction, or (MySQL) lifted
    read-only mode: refused on both engines with the same message."""

    def __init__(self) -> None:
        super().__init__(TRANSACTION_CONTROL_REFUSED)


_P = ParamSpec("_P")
_R = TypeVar("_R")


def only_database_errors_logged_to(
    log: logging.Logger,
) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """A decorator for the `DatabasePort` contract: callers see `DatabaseError` types only.

    The known failures are translated where they happen; this is the net under them, for
    anything unforeseen (a bug, an encoder or parser refusing a value): it is logged to
    `log` with its traceback and reported as a failed query instead of escaping as a stray
    exception.
    """

    def only_database_errors(method: Callable[_P, _R]) -> Callable[_P, _R]:
        @functools.wraps(method)
        def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            try:
                return method(*args, **kwargs)
            except DbwardError:
                raise
            except OSError as exc:
                raise DatabaseError(f"connection lost: {exc}", connectivity=True) from exc
            except Exception as exc:
                log.exception("unexpected failure in %s", method.__qualname__)
                raise DatabaseError(f"query failed: {type(exc).__name__}: {exc}") from exc

        return wrapper

    return only_database_errors
