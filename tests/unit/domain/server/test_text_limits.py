"""Text limits count UTF-8 bytes, and cutting to a limit never splits a character."""

from __future__ import annotations

import pytest

from domain.server.text_limits import truncate_utf8, utf8_len


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("", 0),
        ("abc", 3),
        ("é", 2),  # two bytes, one character
        ("€", 3),
        ("😀", 4),
        ("a€😀", 8),
        ("\ud800", 3),  # a lone surrogate JSON may carry is counted, not refused
    ],
)
def test_lengths_count_utf8_bytes_not_characters(text: str, size: int) -> None:
    assert utf8_len(text) == size


def test_text_within_the_limit_is_returned_unchanged() -> None:
    assert truncate_utf8("a€😀", 8) == "a€😀"
    assert truncate_utf8("a€😀", 100) == "a€😀"
    assert truncate_utf8("", 0) == ""


@pytest.mark.parametrize(
    ("limit", "kept"),
    [
        (0, ""),
        (1, "a"),
        (2, "a"),  # one byte into "€": the whole character goes
        (3, "a"),
        (4, "a€"),
        (5, "a€"),
        (7, "a€"),  # three bytes into "😀"
        (8, "a€😀"),
    ],
)
def test_a_multi_byte_character_is_never_cut(limit: int, kept: str) -> None:
    cut = truncate_utf8("a€😀", limit)
    assert cut == kept
    assert utf8_len(cut) <= limit


def test_every_cut_of_mixed_text_fits_and_is_a_prefix() -> None:
    text = "zß水🎉" * 3
    for limit in range(utf8_len(text) + 2):
        cut = truncate_utf8(text, limit)
        assert utf8_len(cut) <= limit
        assert text.startswith(cut)
        assert "\ufffd" not in cut
