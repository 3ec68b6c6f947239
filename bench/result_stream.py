"""Result streaming: the agent's PostgreSQL SELECT path against direct psycopg + orjson.

    .venv/bin/python bench/result_stream.py

Uses the PostgreSQL server of DBWARD_TEST_POSTGRES_URL (default
postgresql://postgres@127.0.0.1:5432/test). Creates a fresh database holding a table of
1,000,000 rows x 6 columns (int, text, numeric, timestamptz, bool, text), drops it at the
end, and in between times, each in a fresh subprocess so that peak RSS belongs to one run:

* baseline: psycopg `cursor.stream(size=...)` with its default loaders, each row a dict
  encoded by orjson, encoded rows joined per chunk and then into the whole JSON text, decoded
  to `str` (the protocol's `result_data` is text). This is the fastest of the direct variants
  measured while writing this benchmark (server-side cursor + fetchmany, client cursor +
  fetchmany and bigger chunks were all slower), so the comparison is not against a straw man.
* agent: `PostgresDatabase.execute_select` with limits raised above the table size, which
  also applies the exact row/byte accounting and builds the full `result_data`.
* text floor (informational): the baseline with the agent's loaders (server text for every
  type but integers, floats and booleans), i.e. the same decoding work without the agent's
  row accounting; it shows what the agent's own overhead costs.

Best of 3 runs each. Targets: time ratio (agent/baseline) <= 1.3, peak RSS <= 1.2x.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from typing import Any

import orjson
import psycopg
from _databases import fresh_postgres_database

from adapters.postgres.database import PostgresDatabase
from adapters.postgres.values import select_adapters
from application.agent.cancellation import CancelToken
from domain.agent.result_limits import ResultLimits

TABLE = "dbward_bench_rows"
ROWS = 1_000_000
QUERY = f"SELECT * FROM {TABLE}"
RUNS = 3
BASELINE_CHUNK = 200
TIME_TARGET = 1.3
RSS_TARGET = 1.2


def create_table(url: str) -> None:
    """Create and fill the table in the benchmark's own database."""
    with psycopg.connect(url, autocommit=True) as conn:
        print(f"creating {TABLE} ({ROWS:,} rows)...", flush=True)
        with conn.transaction():
            conn.execute(
                f"""CREATE TABLE {TABLE} (
                    id integer PRIMARY KEY, label text NOT NULL, amount numeric(12,2) NOT NULL,
                    created_at timestamptz NOT NULL, active boolean NOT NULL,
                    digest text NOT NULL)"""
            )
            conn.execute(
                f"""INSERT INTO {TABLE}
                    SELECT g, 'row ' || g, (g * 1.37)::numeric(12,2),
                           timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second',
                           mod(g, 2) = 0, md5(g::text)
                    FROM generate_series(1, %s) g""",
                (ROWS,),
            )
        conn.execute(f"VACUUM ANALYZE {TABLE}")


def run_baseline(url: str, text_loaders: bool = False) -> int:
    dumps = orjson.dumps
    context = select_adapters() if text_loaders else None
    with psycopg.connect(url, autocommit=True, context=context) as conn:
        cursor = conn.cursor()
        names: list[str] | None = None
        chunks: list[bytes] = []
        batch: list[bytes] = []
        for row in cursor.stream(QUERY, size=BASELINE_CHUNK):
            if names is None:
                names = [column.name for column in cursor.description or ()]
            batch.append(dumps(dict(zip(names, row, strict=True)), default=str))
            if len(batch) >= BASELINE_CHUNK:
                chunks.append(b",".join(batch))
                batch = []
        if batch:
            chunks.append(b",".join(batch))
        data = b'{"rows":[' + b",".join(chunks) + b"]}"
        del chunks
        text = data.decode()
        del data
        return len(text)


def run_agent(url: str) -> int:
    database = PostgresDatabase(url)
    database.connect(10)
    limits = ResultLimits(max_rows=2_000_000, max_bytes=1 << 40)
    output = database.execute_select([QUERY], 0, limits, CancelToken())
    database.close()
    assert output.truncated is False
    return len(output.result_data)


def child(kind: str, url: str) -> None:
    started = time.perf_counter()
    if kind == "agent":
        size = run_agent(url)
    else:
        size = run_baseline(url, text_loaders=kind == "text-floor")
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_mb": peak_mb, "chars": size}))


def measure(kind: str, url: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", kind, url],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    kinds = ("baseline", "agent", "text-floor")
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    with fresh_postgres_database() as url:
        create_table(url)
        for attempt in range(RUNS):
            for kind in kinds if attempt % 2 == 0 else tuple(reversed(kinds)):
                result = measure(kind, url)
                runs[kind].append(result)
                print(
                    f"  {kind:10} run {attempt + 1}: {result['seconds']:.2f} s,"
                    f" peak RSS {result['peak_mb']:.0f} MB, {result['chars']:,} chars",
                    flush=True,
                )
    best = {kind: min(r["seconds"] for r in results) for kind, results in runs.items()}
    peak = {kind: min(r["peak_mb"] for r in results) for kind, results in runs.items()}
    time_ratio = best["agent"] / best["baseline"]
    rss_ratio = peak["agent"] / peak["baseline"]
    print(f"result streaming, {ROWS:,} rows x 6 columns (best of {RUNS})")
    print(
        f"  baseline (psycopg stream + orjson): {best['baseline']:.2f} s, {peak['baseline']:.0f} MB"
    )
    print(f"  agent (execute_select):             {best['agent']:.2f} s, {peak['agent']:.0f} MB")
    floor_secs, floor_mb = best["text-floor"], peak["text-floor"]
    print(f"  text floor (informational):         {floor_secs:.2f} s, {floor_mb:.0f} MB")
    print(f"  time ratio agent/baseline: {time_ratio:.2f} (target <= {TIME_TARGET})")
    print(f"  peak RSS ratio:            {rss_ratio:.2f} (target <= {RSS_TARGET})")
    print(
        f"  agent/text floor:          {best['agent'] / best['text-floor']:.2f} time,"
        f" {peak['agent'] / peak['text-floor']:.2f} RSS (informational)"
    )
    verdict = time_ratio <= TIME_TARGET and rss_ratio <= RSS_TARGET
    print("  targets met" if verdict else "  TARGETS MISSED")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
    else:
        main()
