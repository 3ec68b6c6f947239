"""Loads `tests/data/sql_corpus.yaml`: SQL with its expected class, operation, hits and risk.

The corpus test, the classifier benchmark and the documentation examples share this one
reader, so an entry means the same thing to each of them. A `repeat: n` entry stands for
its statement submitted n times, joined with `";\\n"` (the statement-limit cases).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

CORPUS_PATH = Path(__file__).with_name("sql_corpus.yaml")

_KEYS = {"dialect", "sql", "repeat", "class", "operation", "hits", "risk", "findings", "note"}
_REQUIRED = {"dialect", "sql", "class", "operation", "hits", "risk"}
_RISKS = {"low", "medium", "high", "unknown", "unavailable"}


@dataclass(frozen=True)
class CorpusEntry:
    dialect: str
    sql: str
    repeat: int
    kind: str
    operation: str
    hits: tuple[str, ...]
    findings: tuple[str, ...]
    risk: str
    note: str | None

    @property
    def text(self) -> str:
        """What is submitted: the statement, repeated when the entry says so."""
        return ";\n".join([self.sql] * self.repeat) if self.repeat > 1 else self.sql

    @property
    def label(self) -> str:
        """A short test id: dialect and the start of the SQL."""
        shown = self.sql if len(self.sql) <= 60 else self.sql[:57] + "..."
        return f"{self.dialect}:{shown}" + (f" x{self.repeat}" if self.repeat > 1 else "")


def _entry(raw: dict[str, Any], index: int) -> CorpusEntry:
    unknown = set(raw) - _KEYS
    missing = _REQUIRED - set(raw)
    if unknown or missing:
        raise ValueError(f"{CORPUS_PATH.name} entry {index}: unknown {unknown}, missing {missing}")
    risk = raw["risk"]
    if risk not in _RISKS:
        raise ValueError(f"{CORPUS_PATH.name} entry {index}: risk {risk!r} not in {_RISKS}")
    return CorpusEntry(
        dialect=raw["dialect"],
        sql=raw["sql"],
        repeat=int(raw.get("repeat", 1)),
        kind=raw["class"],
        operation=raw["operation"],
        hits=tuple(raw["hits"]),
        findings=tuple(raw["findings"]) if "findings" in raw else tuple(raw["hits"]),
        risk=risk,
        note=raw.get("note"),
    )


@cache
def _document() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(CORPUS_PATH.read_text(encoding="utf-8"))
    return document


def load_corpus() -> tuple[CorpusEntry, ...]:
    return tuple(_entry(raw, i) for i, raw in enumerate(_document()["entries"], 1))


#: The schema each dialect's tables live in: what an agent's snapshot would say.
SNAPSHOT_SCHEMAS = {"postgresql": "public", "mysql": "test"}


def corpus_snapshot(dialect: str) -> dict[str, Any]:
    """The header's schema as the snapshot document an agent uploads for `dialect`."""
    schema = SNAPSHOT_SCHEMAS[dialect]
    tables = []
    for table in _document()["schema"]["tables"]:
        references = table.get("references")
        constraints = []
        if references is not None:
            constraints.append(
                {
                    "constraint_type": "foreign_key",
                    "referenced_table": references["table"],
                    "referenced_schema": schema,
                    "on_delete": references["on_delete"],
                }
            )
        tables.append(
            {
                "name": table["name"],
                "schema_name": schema,
                "estimated_rows": table["estimated_rows"],
                "constraints": constraints,
            }
        )
    return {"tables": tables}


def corpus_workflow() -> dict[str, Any]:
    """The header's `workflow`: the auto-approve knobs risk is scored with."""
    workflow: dict[str, Any] = _document()["workflow"]
    return workflow
