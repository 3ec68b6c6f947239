"""The permissions creating a request needs, from what its SQL turned out to be.

docs/server.md §1.3 step 9. Creating a request checks them; preflight reports the ones
the caller lacks as blockers, so "would this be accepted?" has one answer.
"""

from __future__ import annotations

from domain.server.rbac import Permission
from domain.server.sql_classification import Classification
from domain.shared.operations import Operation

__all__ = ["permissions_to_create"]


def permissions_to_create(
    operation: Operation,
    classification: Classification | None,
    *,
    emergency: bool = False,
    allow_ddl: bool = False,
) -> list[Permission]:
    """Break-glass needs its own permissions; otherwise a query needs `request.query`, DDL
    only `request.ddl`, anything else `request.dml` (plus `request.ddl` when the batch
    also changes the schema). Migrations need `request.dml`."""
    if emergency:
        wanted = [
            Permission.REQUEST_BREAK_GLASS_QUERY
            if operation is Operation.EXECUTE_SELECT
            else Permission.REQUEST_BREAK_GLASS_DML
        ]
        if allow_ddl:
            wanted.append(Permission.REQUEST_BREAK_GLASS_DDL)
        return wanted
    if operation is Operation.EXECUTE_SELECT:
        return [Permission.REQUEST_QUERY]
    if classification is not None and classification.is_ddl_only:
        return [Permission.REQUEST_DDL]
    wanted = [Permission.REQUEST_DML]
    if classification is not None and classification.contains_ddl:
        wanted.append(Permission.REQUEST_DDL)
    return wanted
