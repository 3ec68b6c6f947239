"""Anchors, signed checkpoints and the audit purge over the in-memory store (docs/server.md §6.6).

The attacker of these tests can write the store: they change, delete and rewrite events and
recompute every hash after their change, which the hash chain alone cannot reveal.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from adapters.crypto.ed25519_signer import Ed25519Signer
from application.server.audit_maintenance import AuditMaintenance
from application.server.settings import RetentionSettings, ServerSettings
from domain.server.audit import AuditEvent, chain
from domain.server.audit_integrity import (
    PURGE_CHECKPOINT_EVENT,
    SIGNED_CHECKPOINT_EVENT,
    Anchor,
    BrokenReason,
    anchor_message,
    key_id_of,
)
from domain.server.errors import Forbidden, Gone, NotFound, Validation
from tests.unit.application.server.identity.harness import STATE, Env, refused


def rewrite_from(env: Env, index: int, **changes: str) -> None:
    """Change event `index` and recompute every hash from there: a consistent forgery."""
    events = env.store.state.events
    previous = events[index - 1].event_hash if index else events[index].prev_hash
    for at in range(index, len(events)):
        event = replace(events[at], **changes) if at == index else events[at]
        events[at] = chain(event, previous)
        previous = events[at].event_hash


def add_users(env: Env, *names: str) -> None:
    for name in names:
        env.user(name, "requester")


class TestHead:
    def test_the_head_is_the_newest_event_signed_with_the_servers_key(self, env: Env) -> None:
        add_users(env, "alice")
        newest = env.store.state.events[-1]
        signed = env.integrity.head(env.admin)
        assert signed.head.event_id == newest.id
        assert signed.head.event_hash == newest.event_hash
        assert signed.head.position == len(env.store.state.events)
        assert signed.public_key_hex == env.signer.public_key_hex()
        assert signed.anchor.key_id == key_id_of(env.signer.public_key_hex())
        message = anchor_message(newest.id, newest.event_hash, signed.head.position)
        assert (
            message
            == (
                f"dbward-audit-anchor:v1|{signed.head.position}|{newest.id}|{newest.event_hash}"
            ).encode()
        )
        assert env.signer.verify(message, signed.anchor.signature)
        assert Anchor.decode(signed.anchor.encode()) == signed.anchor

    def test_head_needs_audit_read(self, env: Env) -> None:
        requester, _ = env.user("req", "requester")
        operator, _ = env.user("op", "operator")
        refused(lambda: env.integrity.head(requester), Forbidden)
        assert env.integrity.head(operator).head.position > 0
        refused(lambda: env.integrity.verify(requester, "a1.x"), Forbidden)

    def test_an_empty_log_has_no_head(self, env: Env) -> None:
        env.store.state.events.clear()
        refused(lambda: env.integrity.head(env.admin), NotFound)


class TestVerifyAgainstAnAnchor:
    def test_an_untouched_chain_holds_its_anchor(self, env: Env) -> None:
        anchor = env.integrity.head(env.admin).anchor.encode()
        add_users(env, "alice", "bob")
        verdict = env.integrity.verify(env.admin, anchor)
        assert verdict.valid and verdict.anchor_verified is True

    def test_the_newest_rows_rewritten_with_recomputed_hashes_are_caught(self, env: Env) -> None:
        add_users(env, "alice", "bob")
        anchor = env.integrity.head(env.admin).anchor
        add_users(env, "carol")
        events = env.store.state.events
        at = len(events) - 4  # up to the anchored event and beyond
        rewrite_from(env, at, actor_id="mallory")

        assert env.integrity.verify(env.admin).valid  # the chain alone cannot tell
        verdict = env.integrity.verify(env.admin, anchor.encode())
        assert not verdict.valid and verdict.anchor_verified is False
        assert verdict.first_broken_id == anchor.event_id
        assert verdict.reason is BrokenReason.ANCHOR_MISMATCH

    def test_a_deleted_tail_is_caught(self, env: Env) -> None:
        add_users(env, "alice")
        anchor = env.integrity.head(env.admin).anchor
        del env.store.state.events[-2:]
        verdict = env.integrity.verify(env.admin, anchor.encode())
        assert (verdict.first_broken_id, verdict.reason) == (
            anchor.event_id,
            BrokenReason.ANCHOR_MISSING,
        )

    def test_a_deleted_middle_event_shifts_the_anchor(self, env: Env) -> None:
        add_users(env, "alice", "bob")
        anchor = env.integrity.head(env.admin).anchor
        events = env.store.state.events
        del events[1]
        rewrite_from(env, 1)
        verdict = env.integrity.verify(env.admin, anchor.encode())
        assert not verdict.valid and verdict.reason is BrokenReason.ANCHOR_MISSING

    def test_an_anchor_from_another_key_or_with_a_bad_signature_is_a_400(self, env: Env) -> None:
        anchor = env.integrity.head(env.admin).anchor
        other = Ed25519Signer(bytes(32))
        foreign = Anchor(
            anchor.event_id,
            anchor.event_hash,
            anchor.position,
            key_id_of(other.public_key_hex()),
            other.sign(anchor.message),
        )
        refused(lambda: env.integrity.verify(env.admin, foreign.encode()), Validation)
        moved = replace(anchor, position=anchor.position + 1)
        refused(lambda: env.integrity.verify(env.admin, moved.encode()), Validation)

    @pytest.mark.parametrize(
        "text",
        ["", "a1.", "a1.!!!", "b1.AAAA", "a1." + "A" * 2000, "a1.MXwyfDN8NHw1"],
    )
    def test_malformed_anchors_are_a_400(self, env: Env, text: str) -> None:
        refused(lambda: env.integrity.verify(env.admin, text), Validation)


class TestSignedCheckpoints:
    def test_a_checkpoint_is_written_when_due_and_verifies(self, env: Env) -> None:
        now = env.clock.now()
        assert env.maintenance.write_checkpoint(now) == 1  # none yet: due
        assert env.maintenance.write_checkpoint(now) == 0  # nothing since
        add_users(env, "alice")
        assert env.maintenance.write_checkpoint(now) == 0  # one event, not an hour old
        env.clock.advance(3600)
        assert env.maintenance.write_checkpoint(env.clock.now()) == 1
        checkpoints = env.store.events(SIGNED_CHECKPOINT_EVENT)
        assert len(checkpoints) == 2
        meta = json.loads(checkpoints[1].metadata_json)
        assert meta["event_count_since_last_checkpoint"] == 2  # user.created, token.created
        assert checkpoints[1].actor_id == "system" and checkpoints[1].outcome == "info"
        assert env.integrity.verify(env.admin).valid

    def test_a_hundred_events_make_a_checkpoint_due(self, env: Env) -> None:
        env.maintenance.write_checkpoint(env.clock.now())
        add_users(env, *(f"u{n}" for n in range(50)))  # two events each
        assert env.maintenance.write_checkpoint(env.clock.now()) == 1

    def test_a_rewrite_before_a_checkpoint_is_caught_at_the_checkpoint(self, env: Env) -> None:
        add_users(env, "alice")
        env.maintenance.write_checkpoint(env.clock.now())
        add_users(env, "bob")
        rewrite_from(env, 2, actor_id="mallory")
        verdict = env.integrity.verify(env.admin)
        [checkpoint] = env.store.events(SIGNED_CHECKPOINT_EVENT)
        assert (verdict.first_broken_id, verdict.reason) == (
            checkpoint.id,
            BrokenReason.CHECKPOINT_INVALID,
        )

    def test_a_forged_checkpoint_signature_is_caught(self, env: Env) -> None:
        env.maintenance.write_checkpoint(env.clock.now())
        events = env.store.state.events
        meta = json.loads(events[-1].metadata_json)
        meta["signature"] = "00" * 64
        rewrite_from(env, len(events) - 1, metadata_json=json.dumps(meta))
        verdict = env.integrity.verify(env.admin)
        assert verdict.reason is BrokenReason.CHECKPOINT_INVALID


class TestPurge:
    def purging_env(self) -> Env:
        return Env(
            ServerSettings.for_state_dir(STATE, retention=RetentionSettings(audit_ttl_days=30))
        )

    def test_a_purge_leaves_verify_green_and_keeps_positions(self) -> None:
        env = self.purging_env()
        add_users(env, "alice")
        env.maintenance.write_checkpoint(env.clock.now())
        old_anchor = env.integrity.head(env.admin).anchor  # the checkpoint itself
        env.clock.advance(86400)
        add_users(env, "bob")
        kept = [e.id for e in env.store.state.events if e.created_at > old_anchor_time(env)]
        recent_anchor = env.integrity.head(env.admin).anchor

        assert env.maintenance.purge_expired(env.clock.now()) == 0  # nothing is 30 days old
        env.clock.advance(30 * 86400)
        purged = env.maintenance.purge_expired(env.clock.now())

        assert purged == old_anchor.position
        remaining = env.store.state.events
        assert [e.id for e in remaining][: len(kept)] == kept
        assert remaining[-1].event_type == PURGE_CHECKPOINT_EVENT
        verdict = env.integrity.verify(env.admin)
        assert verdict.valid, verdict
        assert verdict.total_events == len(remaining)
        assert env.integrity.verify(env.admin, recent_anchor.encode()).anchor_verified
        refused(lambda: env.integrity.verify(env.admin, old_anchor.encode()), Gone)
        head = env.integrity.head(env.admin).head
        assert head.position == old_anchor.position + len(remaining)
        assert env.maintenance.purge_expired(env.clock.now()) == 0  # idempotent

    def test_a_purge_needs_a_checkpoint_before_the_cutoff(self) -> None:
        env = self.purging_env()
        add_users(env, "alice")
        env.clock.advance(31 * 86400)
        assert env.maintenance.purge_expired(env.clock.now()) == 0
        assert env.store.state.events[0].prev_hash is None

    def test_deleting_a_prefix_without_a_signed_purge_checkpoint_is_caught(self, env: Env) -> None:
        add_users(env, "alice")
        events = env.store.state.events
        first_kept = events[3]
        del events[:3]
        verdict = env.integrity.verify(env.admin)
        assert (verdict.first_broken_id, verdict.reason) == (
            first_kept.id,
            BrokenReason.PURGE_BOUNDARY_UNAUTHENTICATED,
        )

    def test_a_forged_purge_checkpoint_is_caught(self) -> None:
        env = self.purging_env()
        env.maintenance.write_checkpoint(env.clock.now())
        env.clock.advance(31 * 86400)
        add_users(env, "alice")
        env.maintenance.purge_expired(env.clock.now())
        [checkpoint] = env.store.state.purge_checkpoints
        env.store.state.purge_checkpoints[0] = replace(
            checkpoint, purged_through_position=checkpoint.purged_through_position + 5
        )
        verdict = env.integrity.verify(env.admin)
        assert verdict.reason is BrokenReason.PURGE_BOUNDARY_UNAUTHENTICATED

    def test_the_purge_is_signed_by_the_maintenance_key(self) -> None:
        env = self.purging_env()
        other = AuditMaintenance(
            store=env.store,  # type: ignore[arg-type]
            settings=env.settings,
            signer=Ed25519Signer(bytes(32)),
        )
        env.maintenance.write_checkpoint(env.clock.now())
        env.clock.advance(31 * 86400)
        add_users(env, "alice")
        assert other.purge_expired(env.clock.now()) > 0
        assert not env.integrity.verify(env.admin).valid


def old_anchor_time(env: Env) -> str:
    checkpoints: list[AuditEvent] = env.store.events(SIGNED_CHECKPOINT_EVENT)
    return checkpoints[-1].created_at
