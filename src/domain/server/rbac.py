"""Roles, permissions and the two-layer authorization model (docs/server.md §2.5, §4).

Layer 1 asks "may this principal do X at all, here?": some effective role must grant the
permission, and for scoped permissions the role's databases and environments must cover
the request's. Layer 2 asks "may they do it to *this* resource?": ownership, a relationship
(pending or past approver), or a selector grant. Ownership `any` from any role in scope
lifts the layer-2 ownership checks.

Approval rights are different on purpose: they come only from the workflow's approver
selectors (`is_approvable_by`), never from a permission, so no role can approve everything.

Our change to dbward 0.2 (docs/server.md §11.8): the built-in `admin` also holds
`request.view:any` and `result.view:any`, so an administrator can audit requests through the
API without also being an operator. Everything else about the built-in roles is unchanged.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Protocol, TypeVar

from domain.server.api_tokens import SubjectType
from domain.server.channels import Channel
from domain.server.errors import Forbidden, Validation
from domain.shared.scopes import is_valid_scope_name

# --- permissions ------------------------------------------------------------------


class Ownership(StrEnum):
    """How far a permission reaches: the principal's own resources, or anyone's."""

    OWN = "own"
    ANY = "any"


class Permission(StrEnum):
    # operation plane (scoped to a database and environment)
    REQUEST_QUERY = "request.query"
    REQUEST_DML = "request.dml"
    REQUEST_DDL = "request.ddl"
    REQUEST_BREAK_GLASS_QUERY = "request.break_glass_query"
    REQUEST_BREAK_GLASS_DML = "request.break_glass_dml"
    REQUEST_BREAK_GLASS_DDL = "request.break_glass_ddl"
    REQUEST_VIEW = "request.view"
    REQUEST_CANCEL = "request.cancel"
    REQUEST_RESUME = "request.resume"
    REQUEST_PREFLIGHT = "request.preflight"
    REQUEST_PREFLIGHT_EXPLAIN = "request.preflight_explain"
    RESULT_VIEW = "result.view"
    SCHEMA_READ = "schema.read"
    # system plane
    WORKFLOW_READ = "workflow.read"
    WORKFLOW_WRITE = "workflow.write"
    POLICY_WRITE = "policy.write"
    ROLE_WRITE = "role.write"
    USER_READ = "user.read"
    USER_WRITE = "user.write"
    WEBHOOK_WRITE = "webhook.write"
    TOKEN_CREATE = "token.create"  # noqa: S105 - a permission name
    TOKEN_REVOKE = "token.revoke"  # noqa: S105 - a permission name
    TOKEN_LIST = "token.list"  # noqa: S105 - a permission name
    TOKEN_CREATE_AGENT = "token.create_agent"  # noqa: S105 - a permission name
    TOKEN_REISSUE = "token.reissue"  # noqa: S105 - a permission name
    AUDIT_READ = "audit.read"
    METRICS_VIEW = "metrics.view"
    # infrastructure
    AGENT_OPERATE = "agent.operate"
    #: Every permission, with ownership `any`. Only ever granted, never asked for.
    ALL = "*"


#: Names from older dbward versions. Rejected (a silently ignored permission would be a
#: silent privilege change) with the names that replace them.
DEPRECATED_PERMISSIONS: Mapping[str, str] = MappingProxyType(
    {
        "request.execute": "request.query, request.dml or request.ddl",
        "request.create": "request.query, request.dml or request.ddl",
        "request.create_select": "request.query",
        "request.approve": "workflow approver selectors (approval is not a permission)",
        "request.dispatch": "request.resume",
        "request.break_glass": (
            "request.break_glass_query, request.break_glass_dml or request.break_glass_ddl"
        ),
        "token.manage": "token.create, token.revoke, token.list or token.create_agent",
        "token.revoke_own": "token.revoke",
        "audit.view": "audit.read",
        "audit.view_all": "audit.read",
        "workflow.manage": "workflow.write",
        "policy.manage": "policy.write",
        "role.manage": "role.write",
        "webhook.manage": "webhook.write",
        "user.manage": "user.write",
        "agent.poll": "agent.operate",
        "agent.claim": "agent.operate",
        "agent.heartbeat": "agent.operate",
        "agent.submit_result": "agent.operate",
    }
)


class InvalidPermission(Validation):
    """A permission string that is unknown, deprecated or badly suffixed (a config error)."""


@dataclass(frozen=True)
class Grant:
    """One permission as a role holds it, with its ownership."""

    permission: Permission
    ownership: Ownership = Ownership.OWN

    def covers(self, wanted: Permission) -> bool:
        """Whether this grant answers for `wanted` (`*` covers all, `user.write` reads too)."""
        return (
            self.permission is Permission.ALL
            or self.permission is wanted
            or (self.permission is Permission.USER_WRITE and wanted is Permission.USER_READ)
        )

    def __str__(self) -> str:
        if self.permission is Permission.ALL:
            return "*"
        if self.ownership is Ownership.ANY:
            return f"{self.permission}:any"
        return str(self.permission)


def parse_permission(text: str) -> Grant:
    """Parse `resource.action[:own|:any]` or `*`; ownership defaults to own."""
    name, sep, suffix = text.partition(":")
    if name == "*":
        if sep:
            raise InvalidPermission(f"the wildcard permission '*' takes no suffix: {text!r}")
        return Grant(Permission.ALL, Ownership.ANY)
    if name in DEPRECATED_PERMISSIONS:
        raise InvalidPermission(
            f"deprecated permission {name!r} is no longer supported; "
            f"use {DEPRECATED_PERMISSIONS[name]}"
        )
    try:
        permission = Permission(name)
    except ValueError:
        raise InvalidPermission(f"unknown permission {name!r}") from None
    if not sep:
        return Grant(permission)
    try:
        ownership = Ownership(suffix)
    except ValueError:
        raise InvalidPermission(
            f"invalid ownership suffix {suffix!r} in {text!r}: use ':own' or ':any'"
        ) from None
    return Grant(permission, ownership)


def parse_permissions(texts: Iterable[str]) -> tuple[Grant, ...]:
    return tuple(parse_permission(text) for text in texts)


# --- roles --------------------------------------------------------------------------

ADMIN = "admin"
REQUESTER = "requester"
APPROVER = "approver"
OPERATOR = "operator"
AGENT_DEFAULT = "agent-default"


def _covers(allowed: tuple[str, ...], name: str) -> bool:
    return not allowed or "*" in allowed or name in allowed


@dataclass(frozen=True)
class Role:
    """A named set of grants, valid inside its databases and environments (empty = `*`)."""

    name: str
    grants: tuple[Grant, ...]
    databases: tuple[str, ...] = ()
    environments: tuple[str, ...] = ()
    built_in: bool = False

    def covers_scope(self, database: str, environment: str) -> bool:
        return _covers(self.databases, database) and _covers(self.environments, environment)

    def ownership_for(self, permission: Permission) -> Ownership | None:
        """The widest ownership this role grants for `permission`, ignoring scope."""
        best: Ownership | None = None
        for grant in self.grants:
            if grant.covers(permission):
                if grant.ownership is Ownership.ANY:
                    return Ownership.ANY
                best = Ownership.OWN
        return best

    @property
    def permissions(self) -> tuple[str, ...]:
        """The grants as strings (`request.view:any`), in definition order."""
        return tuple(str(grant) for grant in self.grants)


def _built_in(name: str, *permissions: str) -> Role:
    return Role(name=name, grants=parse_permissions(permissions), built_in=True)


#: The built-in roles of docs/server.md §4.2 (scoped to every database and environment),
#: with `request.view:any` and `result.view:any` added to admin.
BUILT_IN_ROLES: Mapping[str, Role] = MappingProxyType(
    {
        ADMIN: _built_in(
            ADMIN,
            "workflow.read",
            "workflow.write",
            "policy.write",
            "role.write",
            "user.read",
            "user.write",
            "webhook.write",
            "token.create",
            "token.revoke:any",
            "token.list",
            "token.create_agent",
            "token.reissue",
            "audit.read",
            "metrics.view",
            "request.view:any",
            "result.view:any",
        ),
        REQUESTER: _built_in(
            REQUESTER,
            "request.dml",
            "request.ddl",
            "request.query",
            "request.view",
            "request.cancel",
            "request.resume",
            "request.preflight",
            "request.preflight_explain",
            "result.view",
            "schema.read",
            "workflow.read",
            "token.create",
            "token.revoke",
        ),
        APPROVER: _built_in(
            APPROVER,
            "request.view",
            "result.view",
            "schema.read",
            "workflow.read",
            "token.create",
            "token.revoke",
        ),
        OPERATOR: _built_in(
            OPERATOR,
            "request.query",
            "request.dml",
            "request.ddl",
            "request.view:any",
            "request.cancel:any",
            "request.resume:any",
            "request.break_glass_query",
            "request.break_glass_dml",
            "request.break_glass_ddl",
            "result.view:any",
            "schema.read",
            "audit.read",
            "metrics.view",
            "workflow.read",
            "token.create",
            "token.revoke",
        ),
        AGENT_DEFAULT: _built_in(AGENT_DEFAULT, "agent.operate"),
    }
)


def define_role(
    name: str,
    permissions: Iterable[str],
    databases: Iterable[str] = (),
    environments: Iterable[str] = (),
) -> Role:
    """A custom role from config or the API, validated: a bad role is refused at load."""
    if not name or name != name.strip() or any(ch.isspace() or ch == ":" for ch in name):
        raise Validation(f"invalid role name {name!r}: no spaces or ':' allowed")
    if name in BUILT_IN_ROLES:
        raise Validation(f"built-in role {name!r} cannot be redefined")
    grants = parse_permissions(permissions)  # may be empty: a role used only as a selector
    dbs = tuple(databases)
    envs = tuple(environments)
    for kind, values in (("database", dbs), ("environment", envs)):
        for value in values:
            if value != "*" and not is_valid_scope_name(value):
                raise Validation(f"invalid {kind} in role {name!r}: {value}")
    return Role(name=name, grants=grants, databases=dbs, environments=envs)


def role_catalog(
    config_roles: Iterable[Role] = (), stored_roles: Iterable[Role] = ()
) -> Mapping[str, Role]:
    """Every known role by name: built-in first, then config, then database roles.

    A config role may not reuse a built-in or another config role's name (a config
    error). Database rows named like a built-in are dbward 0.2's seeded copies and are
    ignored; a database role shadowed by a config role loses to the config.
    """
    catalog: dict[str, Role] = dict(BUILT_IN_ROLES)
    from_config: set[str] = set()
    for role in config_roles:
        if role.name in BUILT_IN_ROLES:
            raise Validation(f"built-in role {role.name!r} cannot be redefined")
        if role.name in from_config:
            raise Validation(f"role {role.name!r} is defined more than once")
        from_config.add(role.name)
        catalog[role.name] = role
    for role in stored_roles:
        catalog.setdefault(role.name, role)
    return MappingProxyType(catalog)


def _lookup(name: str, role_definitions: Mapping[str, Role]) -> Role | None:
    built_in = BUILT_IN_ROLES.get(name)
    return built_in if built_in is not None else role_definitions.get(name)


def resolve_roles(
    subject_type: SubjectType,
    direct_roles: Iterable[str],
    group_roles: Iterable[str],
    default_role: str | None,
    role_definitions: Mapping[str, Role],
) -> tuple[Role, ...]:
    """The roles a subject holds before the token's ceiling (docs/server.md §4.3).

    An agent always holds exactly `agent-default`. A user holds their direct roles (the
    caller passes none for a user who is not active) and their groups' roles; names that
    resolve to no definition are dropped. When nothing is left the `[auth].default_role`
    applies (we apply it also when every name was unknown, so a deleted role degrades to
    the default rather than to a puzzling `insufficient_scope`). Still nothing → 403
    `no_roles_resolved`.
    """
    if subject_type is SubjectType.AGENT:
        return (BUILT_IN_ROLES[AGENT_DEFAULT],)
    resolved: list[Role] = []
    seen: set[str] = set()
    for name in (*direct_roles, *group_roles):
        if name in seen:
            continue
        seen.add(name)
        role = _lookup(name, role_definitions)
        if role is not None:
            resolved.append(role)
    if not resolved and default_role:
        role = _lookup(default_role, role_definitions)
        if role is not None:
            resolved.append(role)
    if not resolved:
        raise Forbidden("no roles resolved for this subject", code="no_roles_resolved")
    return tuple(resolved)


def apply_ceiling(
    resolved: Iterable[Role], ceiling: Collection[str] | None, subject_type: SubjectType
) -> tuple[Role, ...]:
    """Effective roles: the resolved roles the token's scope ceiling allows (§4.3 item 5).

    A user token must carry a ceiling (one without is refused, fail-closed); an agent
    token with no ceiling, or the agent ceiling `["agent-default"]`, keeps every resolved
    role. An empty intersection is 403 `insufficient_scope`.
    """
    roles = tuple(resolved)
    if subject_type is SubjectType.AGENT and (
        ceiling is None or tuple(ceiling) == (AGENT_DEFAULT,)
    ):
        return roles
    if ceiling is None:
        raise Forbidden("token has no scope ceiling", code="insufficient_scope")
    allowed = set(ceiling)
    effective = tuple(role for role in roles if role.name in allowed)
    if not effective:
        raise Forbidden(
            "the token's scope ceiling grants none of the subject's roles",
            code="insufficient_scope",
        )
    return effective


def effective_permissions(roles: Iterable[Role]) -> tuple[str, ...]:
    """Sorted grant strings across roles, widest ownership kept (token create/inspect)."""
    widest: dict[Permission, Ownership] = {}
    for role in roles:
        for grant in role.grants:
            if widest.get(grant.permission) is not Ownership.ANY:
                widest[grant.permission] = grant.ownership
    return tuple(sorted(str(Grant(perm, own)) for perm, own in widest.items()))


# --- principals and layer 1 ------------------------------------------------------------


@dataclass(frozen=True)
class Principal:
    """Who is calling: the authenticated subject with its *effective* roles and groups.

    `groups` is the union of database group memberships and an OIDC `groups` claim.
    """

    subject_id: str
    subject_type: SubjectType
    roles: tuple[Role, ...]
    groups: frozenset[str] = field(default_factory=frozenset)
    token_id: str | None = None
    #: The client surface the call came through (docs/mcp.md); None for the plain API.
    channel: Channel | None = None

    @property
    def role_names(self) -> frozenset[str]:
        return frozenset(role.name for role in self.roles)

    @property
    def is_agent(self) -> bool:
        return self.subject_type is SubjectType.AGENT


def _check_subject_kind(principal: Principal, permission: Permission) -> None:
    """Agents may use only `agent.operate`, and only agents may use it.

    The second half is ours: dbward 0.2's poll refuses user tokens with 403 before it
    checks the permission, so a user holding `*` could never act as an agent anyway; saying
    it here keeps every entry point honest.
    """
    if permission is Permission.ALL:
        raise ValueError("'*' is granted, never asked for: authorize a concrete permission")
    if principal.is_agent and permission is not Permission.AGENT_OPERATE:
        raise Forbidden(f"agent tokens may only use {Permission.AGENT_OPERATE}")
    if not principal.is_agent and permission is Permission.AGENT_OPERATE:
        raise Forbidden(f"{Permission.AGENT_OPERATE} requires an agent token")


def _widest(
    principal: Principal, permission: Permission, scope: tuple[str, str] | None
) -> Ownership | None:
    best: Ownership | None = None
    for role in principal.roles:
        if scope is not None and not role.covers_scope(*scope):
            continue
        ownership = role.ownership_for(permission)
        if ownership is Ownership.ANY:
            return Ownership.ANY
        if ownership is not None:
            best = ownership
    return best


def authorize_global(principal: Principal, permission: Permission) -> Ownership:
    """Layer 1 for system-plane permissions: any effective role may grant it, scope ignored.

    Returns the effective ownership; raises `Forbidden` when no role grants it.
    """
    _check_subject_kind(principal, permission)
    ownership = _widest(principal, permission, None)
    if ownership is None:
        raise Forbidden(f"permission denied: {permission}")
    return ownership


def authorize_scoped(
    principal: Principal, permission: Permission, database: str, environment: str
) -> Ownership:
    """Layer 1 for operation-plane permissions: a role must grant it *and* cover db/env.

    The ownership is `any` when any in-scope role grants the permission as `any`.
    """
    _check_subject_kind(principal, permission)
    ownership = _widest(principal, permission, (database, environment))
    if ownership is None:
        raise Forbidden(f"permission denied: {permission} on {database}/{environment}")
    return ownership


def has_permission(
    principal: Principal,
    permission: Permission,
    database: str | None = None,
    environment: str | None = None,
) -> bool:
    """Non-raising layer 1, for filters such as list queries and UI hints."""
    try:
        if database is None or environment is None:
            authorize_global(principal, permission)
        else:
            authorize_scoped(principal, permission, database, environment)
    except Forbidden:
        return False
    return True


# --- selectors -----------------------------------------------------------------------------


class SelectorKind(StrEnum):
    REQUESTER = "requester"
    ROLE = "role"
    GROUP = "group"
    USER = "user"


class SelectorLike(Protocol):
    """Anything with a selector's `kind` and `name`: our `Selector`, a workflow approver.

    Matching works on this shape so approval code can pass workflow approver entries
    directly, whatever module defines them.
    """

    @property
    def kind(self) -> str: ...

    @property
    def name(self) -> str: ...


_S = TypeVar("_S", bound=SelectorLike)


@dataclass(frozen=True)
class Selector:
    """Who an approver entry, a `share_with` entry or a result policy `access` names."""

    kind: SelectorKind
    name: str = ""

    def matches(self, principal: Principal, requester: str | None = None) -> bool:
        return selector_matches(self, principal, requester)

    def __str__(self) -> str:
        if self.kind is SelectorKind.REQUESTER:
            return "requester"
        return f"{self.kind}:{self.name}"


_VALUED_KINDS = {kind.value: kind for kind in SelectorKind if kind is not SelectorKind.REQUESTER}


def parse_selector(text: str) -> Selector:
    """Parse `requester`, `role:x`, `group:x` or `user:x` (400 `validation.failed` if not)."""
    if text == "requester":
        return Selector(SelectorKind.REQUESTER)
    prefix, sep, name = text.partition(":")
    if not sep:
        raise Validation(
            f"invalid selector: missing ':' in {text!r}; "
            "expected requester, role:<name>, group:<name> or user:<name>"
        )
    kind = _VALUED_KINDS.get(prefix)
    if kind is None:
        raise Validation(f"invalid selector: unknown prefix {prefix!r} in {text!r}")
    if not name or name != name.strip():
        raise Validation(f"invalid selector: empty or padded name in {text!r}")
    return Selector(kind, name)


def selector_matches(
    selector: SelectorLike, principal: Principal, requester: str | None = None
) -> bool:
    """Whether `principal` is who `selector` names.

    Roles are the principal's *effective* roles (after the token's ceiling), groups the
    database memberships plus any OIDC claim, `user:x` the subject id; `requester` matches
    only the request's requester.
    """
    kind = selector.kind
    if kind == SelectorKind.REQUESTER:
        return requester is not None and principal.subject_id == requester
    if kind == SelectorKind.ROLE:
        return selector.name in principal.role_names
    if kind == SelectorKind.GROUP:
        return selector.name in principal.groups
    if kind == SelectorKind.USER:
        return principal.subject_id == selector.name
    return False


def matched_selectors(
    principal: Principal, selectors: Iterable[_S], requester: str | None = None
) -> tuple[_S, ...]:
    """The selectors `principal` matches, in order (an approval records which one it used)."""
    return tuple(sel for sel in selectors if selector_matches(sel, principal, requester))


# --- layer 2: resource contexts ------------------------------------------------------------


@dataclass(frozen=True)
class Global:
    """No resource check (system-plane actions)."""


@dataclass(frozen=True)
class RequestView:
    requester: str
    is_pending_approver: bool = False
    has_approved: bool = False


@dataclass(frozen=True)
class RequestMutate:
    """Cancel and resume."""

    requester: str


@dataclass(frozen=True)
class Result:
    requester: str
    access_selectors: tuple[SelectorLike, ...] = ()


@dataclass(frozen=True)
class Token:
    owner: str


@dataclass(frozen=True)
class AgentExecution:
    agent_id: str


@dataclass(frozen=True)
class User:
    target: str


ResourceContext = Global | RequestView | RequestMutate | Result | Token | AgentExecution | User

GLOBAL = Global()


def check_resource(principal: Principal, ownership: Ownership, context: ResourceContext) -> None:
    """Layer 2, given the ownership layer 1 granted; raises `Forbidden`."""
    subject = principal.subject_id
    any_owner = ownership is Ownership.ANY
    if isinstance(context, Global | User):
        return
    if isinstance(context, RequestView):
        if (
            any_owner
            or subject == context.requester
            or context.is_pending_approver
            or context.has_approved
        ):
            return
        raise Forbidden("you may not view this request")
    if isinstance(context, RequestMutate):
        if any_owner or subject == context.requester:
            return
        raise Forbidden("only the requester may change this request")
    if isinstance(context, Result):
        if (
            any_owner
            or subject == context.requester
            or matched_selectors(principal, context.access_selectors, context.requester)
        ):
            return
        raise Forbidden("you may not view this result")
    if isinstance(context, Token):
        if any_owner or subject == context.owner:
            return
        raise Forbidden("you may only manage your own tokens")
    if subject == context.agent_id:
        return
    raise Forbidden("this execution belongs to another agent")


def authorize(
    principal: Principal,
    permission: Permission,
    context: ResourceContext = GLOBAL,
    *,
    database: str | None = None,
    environment: str | None = None,
) -> Ownership:
    """Both layers: scoped when `database` and `environment` are given, else global.

    Reading one's own user record (`User(target=self)`) skips layer 1, as in dbward 0.2.
    """
    if isinstance(context, User) and context.target == principal.subject_id:
        _check_subject_kind(principal, permission)
        return Ownership.OWN
    if database is not None and environment is not None:
        ownership = authorize_scoped(principal, permission, database, environment)
    else:
        ownership = authorize_global(principal, permission)
    check_resource(principal, ownership, context)
    return ownership


# --- approvals (§2.5) ----------------------------------------------------------------------


def check_approvable(
    principal: Principal,
    *,
    requester: str,
    step_selectors: Iterable[_S],
    current_step: int,
    approved_steps: Collection[int] = (),
    allow_self_approve: bool = False,
    allow_same_approver_across_steps: bool = False,
) -> tuple[_S, ...]:
    """Raise `Forbidden` unless `principal` may approve (or reject) the current step.

    `approved_steps` are the step indexes this principal already approved on this request.
    There is no permission gate: the workflow's selectors are the only source of approval
    rights. Returns the step selectors the principal matches.
    """
    if principal.is_agent:
        raise Forbidden("agent tokens cannot approve requests")
    if not allow_self_approve and principal.subject_id == requester:
        raise Forbidden("you cannot approve your own request")
    if not allow_same_approver_across_steps and any(step < current_step for step in approved_steps):
        raise Forbidden("you already approved an earlier step of this request")
    matched = matched_selectors(principal, step_selectors, requester)
    if not matched:
        raise Forbidden("you are not an approver for the current step")
    return matched


def is_approvable_by(
    principal: Principal,
    *,
    requester: str,
    step_selectors: Iterable[SelectorLike],
    current_step: int,
    approved_steps: Collection[int] = (),
    allow_self_approve: bool = False,
    allow_same_approver_across_steps: bool = False,
) -> bool:
    """Non-raising `check_approvable` (the `pending_for_me` list, UI hints)."""
    try:
        check_approvable(
            principal,
            requester=requester,
            step_selectors=step_selectors,
            current_step=current_step,
            approved_steps=approved_steps,
            allow_self_approve=allow_self_approve,
            allow_same_approver_across_steps=allow_same_approver_across_steps,
        )
    except Forbidden:
        return False
    return True
