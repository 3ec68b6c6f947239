"""RBAC: permissions, built-in roles, resolution, ceilings, both layers, approvers."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

from domain.server.api_tokens import SubjectType
from domain.server.errors import Forbidden, Validation
from domain.server.rbac import (
    ADMIN,
    AGENT_DEFAULT,
    APPROVER,
    BUILT_IN_ROLES,
    GLOBAL,
    OPERATOR,
    REQUESTER,
    AgentExecution,
    Grant,
    InvalidPermission,
    Ownership,
    Permission,
    Principal,
    RequestMutate,
    RequestView,
    Result,
    Role,
    Selector,
    SelectorKind,
    Token,
    User,
    apply_ceiling,
    authorize,
    authorize_global,
    authorize_scoped,
    check_approvable,
    check_resource,
    define_role,
    effective_permissions,
    has_permission,
    is_approvable_by,
    matched_selectors,
    parse_permission,
    parse_selector,
    resolve_roles,
    role_catalog,
)

P = Permission
USER = SubjectType.USER
AGENT = SubjectType.AGENT


def user(name: str, *roles: str | Role, groups: tuple[str, ...] = ()) -> Principal:
    resolved = tuple(BUILT_IN_ROLES[r] if isinstance(r, str) else r for r in roles)
    return Principal(name, USER, resolved, frozenset(groups), token_id=f"tok-{name}")


AGENT_PRINCIPAL = Principal("agent-1", AGENT, (BUILT_IN_ROLES[AGENT_DEFAULT],))


# --- permission strings ----------------------------------------------------------------


def test_parse_permission_defaults_to_own() -> None:
    assert parse_permission("request.view") == Grant(P.REQUEST_VIEW, Ownership.OWN)
    assert parse_permission("request.view:own") == Grant(P.REQUEST_VIEW, Ownership.OWN)
    assert parse_permission("request.view:any") == Grant(P.REQUEST_VIEW, Ownership.ANY)
    assert parse_permission("*") == Grant(P.ALL, Ownership.ANY)


def test_every_listed_permission_parses() -> None:
    operation_plane = [
        "request.query",
        "request.dml",
        "request.ddl",
        "request.break_glass_query",
        "request.break_glass_dml",
        "request.break_glass_ddl",
        "request.view",
        "request.cancel",
        "request.resume",
        "request.preflight",
        "request.preflight_explain",
        "result.view",
        "schema.read",
    ]
    system_plane = [
        "workflow.read",
        "workflow.write",
        "policy.write",
        "role.write",
        "user.read",
        "user.write",
        "webhook.write",
        "token.create",
        "token.revoke",
        "token.list",
        "token.create_agent",
        "token.reissue",
        "audit.read",
        "metrics.view",
    ]
    names = [*operation_plane, *system_plane, "agent.operate"]
    assert {parse_permission(name).permission.value for name in names} == set(names)
    assert {p.value for p in Permission} == {*names, "*"}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("request.fly", "unknown permission 'request.fly'"),
        ("request.execute", "deprecated permission 'request.execute'"),
        ("request.approve", "deprecated permission 'request.approve'"),
        ("token.manage", "deprecated permission 'token.manage'"),
        ("*:any", "takes no suffix"),
        ("request.view:all", "invalid ownership suffix 'all'"),
        ("", "unknown permission ''"),
    ],
)
def test_bad_permissions_are_named(text: str, fragment: str) -> None:
    with pytest.raises(InvalidPermission, match=fragment) as caught:
        parse_permission(text)
    assert caught.value.status == 400


def test_deprecated_names_point_to_the_replacement() -> None:
    with pytest.raises(InvalidPermission, match=re.escape("use token.create, token.revoke")):
        parse_permission("token.manage")


def test_grant_round_trips_as_string() -> None:
    for text in ("request.view", "request.view:any", "*"):
        assert str(parse_permission(text)) == text
    assert str(parse_permission("request.view:own")) == "request.view"


# --- built-in roles ----------------------------------------------------------------------


def test_built_in_roles_exactly() -> None:
    assert set(BUILT_IN_ROLES) == {ADMIN, REQUESTER, APPROVER, OPERATOR, AGENT_DEFAULT}
    assert set(BUILT_IN_ROLES[ADMIN].permissions) == {
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
        "request.view:any",  # ours (§11.8)
        "result.view:any",  # ours
    }
    assert set(BUILT_IN_ROLES[REQUESTER].permissions) == {
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
    }
    assert set(BUILT_IN_ROLES[APPROVER].permissions) == {
        "request.view",
        "result.view",
        "schema.read",
        "workflow.read",
        "token.create",
        "token.revoke",
    }
    assert set(BUILT_IN_ROLES[OPERATOR].permissions) == {
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
    }
    assert BUILT_IN_ROLES[AGENT_DEFAULT].permissions == ("agent.operate",)
    for role in BUILT_IN_ROLES.values():
        assert role.built_in
        assert role.databases == () and role.environments == ()


# role x permission -> expected ownership (None = denied), scoped to app/production.
MATRIX: list[tuple[str, Permission, Ownership | None]] = [
    (ADMIN, P.REQUEST_VIEW, Ownership.ANY),
    (ADMIN, P.RESULT_VIEW, Ownership.ANY),
    (ADMIN, P.REQUEST_QUERY, None),
    (ADMIN, P.REQUEST_DML, None),
    (ADMIN, P.REQUEST_CANCEL, None),
    (ADMIN, P.REQUEST_BREAK_GLASS_DML, None),
    (ADMIN, P.TOKEN_REVOKE, Ownership.ANY),
    (ADMIN, P.USER_READ, Ownership.OWN),
    (ADMIN, P.AUDIT_READ, Ownership.OWN),
    (REQUESTER, P.REQUEST_QUERY, Ownership.OWN),
    (REQUESTER, P.REQUEST_DML, Ownership.OWN),
    (REQUESTER, P.REQUEST_VIEW, Ownership.OWN),
    (REQUESTER, P.REQUEST_RESUME, Ownership.OWN),
    (REQUESTER, P.REQUEST_BREAK_GLASS_QUERY, None),
    (REQUESTER, P.AUDIT_READ, None),
    (REQUESTER, P.USER_WRITE, None),
    (REQUESTER, P.TOKEN_REVOKE, Ownership.OWN),
    (APPROVER, P.REQUEST_VIEW, Ownership.OWN),
    (APPROVER, P.RESULT_VIEW, Ownership.OWN),
    (APPROVER, P.REQUEST_QUERY, None),
    (APPROVER, P.REQUEST_CANCEL, None),
    (OPERATOR, P.REQUEST_VIEW, Ownership.ANY),
    (OPERATOR, P.REQUEST_CANCEL, Ownership.ANY),
    (OPERATOR, P.REQUEST_RESUME, Ownership.ANY),
    (OPERATOR, P.REQUEST_BREAK_GLASS_DDL, Ownership.OWN),
    (OPERATOR, P.RESULT_VIEW, Ownership.ANY),
    (OPERATOR, P.METRICS_VIEW, Ownership.OWN),
    (OPERATOR, P.TOKEN_LIST, None),
    (OPERATOR, P.ROLE_WRITE, None),
]


@pytest.mark.parametrize(("role", "permission", "expected"), MATRIX)
def test_built_in_role_matrix(
    role: str, permission: Permission, expected: Ownership | None
) -> None:
    principal = user("u", role)
    if expected is None:
        with pytest.raises(Forbidden):
            authorize_scoped(principal, permission, "app", "production")
        assert not has_permission(principal, permission, "app", "production")
    else:
        assert authorize_scoped(principal, permission, "app", "production") is expected
        assert authorize_global(principal, permission) is expected


def test_user_write_implies_user_read() -> None:
    writer = user("w", define_role("user-admin", ["user.write"]))
    assert authorize_global(writer, P.USER_READ) is Ownership.OWN


def test_wildcard_role_grants_everything_with_any() -> None:
    root = user("root", define_role("root", ["*"]))
    for permission in Permission:
        if permission in (P.ALL, P.AGENT_OPERATE):
            continue
        assert authorize_scoped(root, permission, "app", "production") is Ownership.ANY


def test_asking_for_the_wildcard_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="granted, never asked"):
        authorize_global(user("u", ADMIN), P.ALL)


# --- custom roles and scopes -------------------------------------------------------------


def test_custom_role_only_inside_its_scope() -> None:
    analyst = define_role("analyst", ["request.query"], ["app"], ["staging", "dev"])
    principal = user("ann", analyst)
    assert authorize_scoped(principal, P.REQUEST_QUERY, "app", "staging") is Ownership.OWN
    assert authorize_scoped(principal, P.REQUEST_QUERY, "app", "dev") is Ownership.OWN
    for db, env in (("app", "production"), ("billing", "staging")):
        with pytest.raises(Forbidden, match=f"request.query on {db}/{env}"):
            authorize_scoped(principal, P.REQUEST_QUERY, db, env)
    # global checks ignore scope (layer 1 for system-plane permissions)
    assert authorize_global(principal, P.REQUEST_QUERY) is Ownership.OWN


def test_empty_or_star_scope_means_everything() -> None:
    for role in (
        define_role("a", ["schema.read"]),
        define_role("b", ["schema.read"], ["*"], ["*"]),
    ):
        assert role.covers_scope("anything", "anywhere")


def test_effective_ownership_is_any_only_from_an_in_scope_role() -> None:
    prod_viewer = define_role("prod-viewer", ["request.view:any"], ["app"], ["production"])
    principal = user("v", REQUESTER, prod_viewer)
    assert authorize_scoped(principal, P.REQUEST_VIEW, "app", "production") is Ownership.ANY
    assert authorize_scoped(principal, P.REQUEST_VIEW, "app", "staging") is Ownership.OWN


@pytest.mark.parametrize(
    ("name", "dbs", "envs", "fragment"),
    [
        ("admin", (), (), "built-in role 'admin' cannot be redefined"),
        ("agent-default", (), (), "cannot be redefined"),
        ("", (), (), "invalid role name"),
        ("has space", (), (), "invalid role name"),
        ("role:x", (), (), "invalid role name"),
        ("ok", ("App",), (), "invalid database in role 'ok': App"),
        ("ok", (), ("prod\n",), "invalid environment in role 'ok'"),
    ],
)
def test_define_role_validation(
    name: str, dbs: tuple[str, ...], envs: tuple[str, ...], fragment: str
) -> None:
    with pytest.raises(Validation, match=fragment):
        define_role(name, ["schema.read"], dbs, envs)


def test_define_role_rejects_bad_permissions_by_name() -> None:
    with pytest.raises(InvalidPermission, match=re.escape("request.execute")):
        define_role("legacy", ["schema.read", "request.execute"])


def test_a_role_without_permissions_is_allowed_for_selectors() -> None:
    assert define_role("dba", []).grants == ()


def test_role_catalog_precedence() -> None:
    config_dba = define_role("dba", ["schema.read"])
    stored_dba = define_role("dba", ["request.query"])
    stored_other = define_role("other", ["workflow.read"])
    seeded_admin = Role("admin", (Grant(P.ALL, Ownership.ANY),))
    catalog = role_catalog([config_dba], [stored_dba, stored_other, seeded_admin])
    assert catalog["dba"] is config_dba
    assert catalog["other"] is stored_other
    assert catalog["admin"] is BUILT_IN_ROLES["admin"]
    with pytest.raises(Validation, match="cannot be redefined"):
        role_catalog([Role("operator", ())])
    with pytest.raises(Validation, match="defined more than once"):
        role_catalog([config_dba, config_dba])


# --- role resolution and ceilings --------------------------------------------------------


def test_agent_resolves_to_exactly_agent_default() -> None:
    roles = resolve_roles(AGENT, ["admin"], ["operator"], "requester", {})
    assert [r.name for r in roles] == [AGENT_DEFAULT]


def test_user_roles_are_direct_then_group_deduplicated_unknown_dropped() -> None:
    dba = define_role("dba", ["schema.read"])
    roles = resolve_roles(USER, ["requester", "ghost"], ["dba", "requester"], None, {"dba": dba})
    assert [r.name for r in roles] == ["requester", "dba"]


def test_default_role_when_nothing_resolved() -> None:
    roles = resolve_roles(USER, [], [], "approver", {})
    assert [r.name for r in roles] == ["approver"]
    roles = resolve_roles(USER, ["deleted-role"], [], "approver", {})
    assert [r.name for r in roles] == ["approver"]
    roles = resolve_roles(USER, ["requester"], [], "approver", {})
    assert [r.name for r in roles] == ["requester"]


@pytest.mark.parametrize("default", [None, "", "no-such-role"])
def test_no_roles_resolved(default: str | None) -> None:
    with pytest.raises(Forbidden) as caught:
        resolve_roles(USER, [], [], default, {})
    assert caught.value.code == "no_roles_resolved"
    assert caught.value.status == 403


def test_ceiling_intersects() -> None:
    resolved = resolve_roles(USER, ["admin", "requester"], [], None, {})
    assert [r.name for r in apply_ceiling(resolved, ["requester"], USER)] == ["requester"]
    assert [r.name for r in apply_ceiling(resolved, ("admin", "requester", "x"), USER)] == [
        "admin",
        "requester",
    ]


@pytest.mark.parametrize("ceiling", [None, [], ["operator"]])
def test_user_ceiling_missing_or_disjoint_is_insufficient_scope(
    ceiling: list[str] | None,
) -> None:
    resolved = resolve_roles(USER, ["requester"], [], None, {})
    with pytest.raises(Forbidden) as caught:
        apply_ceiling(resolved, ceiling, USER)
    assert caught.value.code == "insufficient_scope"


@pytest.mark.parametrize("ceiling", [None, ["agent-default"], ("agent-default",)])
def test_agent_ceiling_none_or_agent_default_keeps_all(ceiling: list[str] | None) -> None:
    resolved = resolve_roles(AGENT, [], [], None, {})
    assert apply_ceiling(resolved, ceiling, AGENT) == resolved


def test_agent_with_a_foreign_ceiling_is_refused() -> None:
    resolved = resolve_roles(AGENT, [], [], None, {})
    with pytest.raises(Forbidden, match="scope ceiling"):
        apply_ceiling(resolved, ["admin"], AGENT)


def test_effective_permissions_keep_the_widest_ownership() -> None:
    perms = effective_permissions([BUILT_IN_ROLES[REQUESTER], BUILT_IN_ROLES[OPERATOR]])
    assert "request.view:any" in perms
    assert "request.view" not in perms
    assert "request.preflight" in perms
    assert list(perms) == sorted(perms)
    assert effective_permissions([define_role("r", ["*"])]) == ("*",)


# --- agents ----------------------------------------------------------------------------------


def test_agents_may_only_operate() -> None:
    assert authorize_global(AGENT_PRINCIPAL, P.AGENT_OPERATE) is Ownership.OWN
    for permission in (P.REQUEST_VIEW, P.SCHEMA_READ, P.METRICS_VIEW):
        with pytest.raises(Forbidden, match=re.escape("agent tokens may only use agent.operate")):
            authorize_scoped(AGENT_PRINCIPAL, permission, "app", "production")
    # even an agent whose roles somehow grant more
    strong_agent = Principal("a", AGENT, (define_role("root", ["*"]),))
    with pytest.raises(Forbidden):
        authorize_global(strong_agent, P.AUDIT_READ)


def test_users_cannot_act_as_agents_even_with_wildcard() -> None:
    root = user("root", define_role("root", ["*"]))
    with pytest.raises(Forbidden, match="requires an agent token"):
        authorize_global(root, P.AGENT_OPERATE)


# --- layer 2 -----------------------------------------------------------------------------------


def test_request_view_owner_relationships_or_any() -> None:
    alice = user("alice", REQUESTER)

    def view(**kw: bool) -> None:
        authorize(alice, P.REQUEST_VIEW, RequestView("bob", **kw), database="app", environment="p")

    with pytest.raises(Forbidden, match="may not view this request"):
        view()
    view(is_pending_approver=True)
    view(has_approved=True)
    authorize(alice, P.REQUEST_VIEW, RequestView("alice"), database="app", environment="p")
    for boss in (user("op", OPERATOR), user("adm", ADMIN)):
        assert (
            authorize(boss, P.REQUEST_VIEW, RequestView("bob"), database="app", environment="p")
            is Ownership.ANY
        )


def test_request_mutate_owner_or_any() -> None:
    ctx = RequestMutate("bob")
    with pytest.raises(Forbidden, match="only the requester"):
        authorize(user("alice", REQUESTER), P.REQUEST_CANCEL, ctx, database="a", environment="b")
    authorize(user("bob", REQUESTER), P.REQUEST_CANCEL, ctx, database="a", environment="b")
    authorize(user("op", OPERATOR), P.REQUEST_RESUME, ctx, database="a", environment="b")
    # admin may view but not cancel: no request.cancel at all
    with pytest.raises(Forbidden, match=re.escape("permission denied: request.cancel")):
        authorize(user("adm", ADMIN), P.REQUEST_CANCEL, ctx, database="a", environment="b")


def test_result_owner_selector_or_any() -> None:
    shared = Result("bob", (parse_selector("group:analysts"), parse_selector("user:carol")))
    alice = user("alice", APPROVER)
    with pytest.raises(Forbidden, match="may not view this result"):
        authorize(alice, P.RESULT_VIEW, shared, database="a", environment="b")
    analyst = user("alice", APPROVER, groups=("analysts",))
    authorize(analyst, P.RESULT_VIEW, shared, database="a", environment="b")
    authorize(user("carol", APPROVER), P.RESULT_VIEW, shared, database="a", environment="b")
    authorize(user("bob", REQUESTER), P.RESULT_VIEW, shared, database="a", environment="b")
    authorize(user("adm", ADMIN), P.RESULT_VIEW, Result("bob"), database="a", environment="b")


def test_result_access_by_effective_role() -> None:
    ctx = Result("bob", (parse_selector("role:operator"),))
    check_resource(user("x", OPERATOR), Ownership.OWN, ctx)
    with pytest.raises(Forbidden):
        check_resource(user("x", APPROVER), Ownership.OWN, ctx)


def test_token_owner_or_any() -> None:
    with pytest.raises(Forbidden, match="your own tokens"):
        authorize(user("alice", REQUESTER), P.TOKEN_REVOKE, Token("bob"))
    authorize(user("bob", REQUESTER), P.TOKEN_REVOKE, Token("bob"))
    assert authorize(user("adm", ADMIN), P.TOKEN_REVOKE, Token("bob")) is Ownership.ANY


def test_agent_execution_belongs_to_its_agent() -> None:
    authorize(AGENT_PRINCIPAL, P.AGENT_OPERATE, AgentExecution("agent-1"))
    with pytest.raises(Forbidden, match="another agent"):
        authorize(AGENT_PRINCIPAL, P.AGENT_OPERATE, AgentExecution("agent-2"))


def test_user_self_read_skips_layer_one() -> None:
    nobody = user("alice", define_role("empty", []))
    assert authorize(nobody, P.USER_READ, User("alice")) is Ownership.OWN
    with pytest.raises(Forbidden, match=re.escape("permission denied: user.read")):
        authorize(nobody, P.USER_READ, User("bob"))
    authorize(user("adm", ADMIN), P.USER_READ, User("bob"))


def test_global_context_is_layer_one_only() -> None:
    assert authorize(user("adm", ADMIN), P.AUDIT_READ) is Ownership.OWN
    assert authorize(user("adm", ADMIN), P.AUDIT_READ, GLOBAL) is Ownership.OWN
    with pytest.raises(Forbidden):
        authorize(user("r", REQUESTER), P.AUDIT_READ)


# --- selectors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "name"),
    [
        ("requester", SelectorKind.REQUESTER, ""),
        ("role:dba", SelectorKind.ROLE, "dba"),
        ("group:dba-team", SelectorKind.GROUP, "dba-team"),
        ("user:alice@example.com", SelectorKind.USER, "alice@example.com"),
    ],
)
def test_parse_selector(text: str, kind: SelectorKind, name: str) -> None:
    selector = parse_selector(text)
    assert selector == Selector(kind, name)
    assert str(selector) == text


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("admin", "missing ':'"),
        ("role:", "empty"),
        ("team:x", "unknown prefix 'team'"),
        ("requester:x", "unknown prefix 'requester'"),
        ("role: dba", "padded"),
    ],
)
def test_bad_selectors(text: str, fragment: str) -> None:
    with pytest.raises(Validation, match=fragment):
        parse_selector(text)


def test_selector_matching() -> None:
    alice = user("alice", APPROVER, groups=("dba-team",))
    assert parse_selector("role:approver").matches(alice)
    assert not parse_selector("role:operator").matches(alice)
    assert parse_selector("group:dba-team").matches(alice)
    assert parse_selector("user:alice").matches(alice)
    assert not parse_selector("user:bob").matches(alice)
    assert parse_selector("requester").matches(alice, requester="alice")
    assert not parse_selector("requester").matches(alice, requester="bob")
    assert not parse_selector("requester").matches(alice)


@dataclass(frozen=True)
class WorkflowApprover:
    """The shape of a workflow approver entry: any kind/name object matches."""

    kind: str
    name: str
    min: int = 1


def test_matched_selectors_accepts_selector_shaped_objects() -> None:
    entries = [WorkflowApprover("role", "dba"), WorkflowApprover("user", "alice", 1)]
    alice = user("alice", APPROVER)
    assert matched_selectors(alice, entries) == (entries[1],)


# --- approver eligibility (§2.5) -----------------------------------------------------------

DBA = define_role("dba", [])
STEP = (parse_selector("role:dba"), parse_selector("group:leads"))


def test_approver_by_role_group_or_user() -> None:
    assert is_approvable_by(user("d", DBA), requester="r", step_selectors=STEP, current_step=0)
    lead = user("l", REQUESTER, groups=("leads",))
    assert is_approvable_by(lead, requester="r", step_selectors=STEP, current_step=0)
    assert is_approvable_by(
        user("carol"), requester="r", step_selectors=[parse_selector("user:carol")], current_step=0
    )
    assert not is_approvable_by(
        user("x", OPERATOR, ADMIN), requester="r", step_selectors=STEP, current_step=0
    )


def test_roles_cut_by_the_ceiling_do_not_approve() -> None:
    resolved = resolve_roles(USER, ["dba", "requester"], [], None, {"dba": DBA})
    narrowed = Principal("d", USER, apply_ceiling(resolved, ["requester"], USER))
    assert not is_approvable_by(narrowed, requester="r", step_selectors=STEP, current_step=0)


def test_agents_never_approve() -> None:
    agent = Principal("agent-1", AGENT, (DBA,))
    with pytest.raises(Forbidden, match="agent tokens cannot approve"):
        check_approvable(agent, requester="r", step_selectors=STEP, current_step=0)


def test_self_approval() -> None:
    me = user("me", DBA)
    with pytest.raises(Forbidden, match="your own request"):
        check_approvable(me, requester="me", step_selectors=STEP, current_step=0)
    assert is_approvable_by(
        me, requester="me", step_selectors=STEP, current_step=0, allow_self_approve=True
    )


def test_cross_step_rule() -> None:
    d = user("d", DBA)
    with pytest.raises(Forbidden, match="earlier step"):
        check_approvable(d, requester="r", step_selectors=STEP, current_step=1, approved_steps={0})
    assert is_approvable_by(
        d,
        requester="r",
        step_selectors=STEP,
        current_step=1,
        approved_steps={0},
        allow_same_approver_across_steps=True,
    )
    # an approval of the current step is not "earlier": the duplicate check lives elsewhere
    assert is_approvable_by(
        d, requester="r", step_selectors=STEP, current_step=1, approved_steps={1}
    )


def test_check_approvable_returns_the_matched_selectors() -> None:
    both = user("d", DBA, groups=("leads",))
    assert check_approvable(both, requester="r", step_selectors=STEP, current_step=0) == STEP
    with pytest.raises(Forbidden, match="not an approver for the current step"):
        check_approvable(user("x"), requester="r", step_selectors=STEP, current_step=0)
