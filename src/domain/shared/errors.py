"""Errors both programs reason about: hard (stop now) or transient (retry later)."""

from __future__ import annotations

from enum import Enum


class Severity(Enum):
    HARD = "hard"
    TRANSIENT = "transient"


class DbwardError(Exception):
    """Base of every error that is either hard or transient."""

    severity: Severity = Severity.TRANSIENT

    @property
    def is_hard(self) -> bool:
        return self.severity is Severity.HARD


class ConfigError(DbwardError):
    """Invalid configuration. The message names the file, the key and the fix."""

    severity = Severity.HARD
