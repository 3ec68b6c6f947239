"""The one version order: the server's version gate and the agent read it alike."""

from __future__ import annotations

import pytest

from domain.shared.versions import version_key, version_lt

#: (older, newer): every pair must compare older < newer and never the other way round.
OLDER_NEWER = [
    ("0.1.9", "0.2.0"),
    ("0.2.0", "0.2.1"),
    ("0.2.0", "0.3.0"),
    ("0.9.0", "0.10.0"),  # numbers, not text
    ("0.9.9", "0.10.0"),
    ("0.2", "0.2.1"),
    ("1", "1.0.1"),
    ("0.2.0-rc1", "0.2.0"),  # a release candidate is older than its release
    ("0.2-rc1", "0.2.0"),
    ("0.2.0", "0.2.1-rc1"),  # but newer than the release before
    ("0.1.9", "0.2.0-rc1"),
    ("0.2.0-alpha", "0.2.0-beta"),
    ("0.2.0-rc1", "0.2.0-rc2"),
    ("0.2.0-rc.2", "0.2.0-rc.10"),  # numeric identifiers by value
    ("0.2.0-1", "0.2.0-rc"),  # numbers before words
    ("0.2.0-rc", "0.2.0-rc.1"),  # more identifiers is newer
    ("0.2.0-9", "0.2.0-10"),
    ("0." + "9" * 5000, "1.0"),  # longer than int() takes: still a number
    ("0." + "9" * 5000, "0.1" + "0" * 5000),
]

#: Pairs that are the same version.
EQUAL = [
    ("0.2", "0.2.0"),
    ("1", "1.0.0.0"),
    ("0.02.0", "0.2"),  # leading zeros do not count
    ("0.2.0rc1", "0.2.0"),  # no dash: a component counts as its leading digits
    ("0.2.x", "0.2"),  # a component without digits counts as 0
    ("0.2.0+build.7", "0.2.0"),  # build notes do not count
    (" 0.2.0\n", "0.2.0"),
    ("", "0"),
    ("0.2.0-rc1", "0.2-rc1"),
]


@pytest.mark.parametrize(("older", "newer"), OLDER_NEWER)
def test_older_is_less_than_newer_and_not_the_reverse(older: str, newer: str) -> None:
    assert version_lt(older, newer)
    assert not version_lt(newer, older)


@pytest.mark.parametrize(("left", "right"), EQUAL)
def test_equal_versions_are_neither_less_nor_greater(left: str, right: str) -> None:
    assert version_key(left) == version_key(right)
    assert not version_lt(left, right)
    assert not version_lt(right, left)


def test_a_version_is_not_older_than_itself() -> None:
    for version, _ in OLDER_NEWER:
        assert not version_lt(version, version)
