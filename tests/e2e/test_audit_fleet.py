"""Three proxies behind one (simulated) load balancer, one fleet audit: under concurrent load, each
call a client made is one row, with the id its response carried, read with `douane audit query
--fleet` and with stock DuckDB."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb

from douane.audit.fleet import fleet_glob
from tests.e2e.conftest import routed_policy

CALLS_PER_INSTANCE = 40


def test_three_instances_one_fleet_audit_with_exact_counts(make_douane, mock: str, tmp_path: Path) -> None:
    fleet = tmp_path / "fleet"
    policy = routed_policy(mock, audit={"fleet": str(fleet), "fleet_every_s": 0.5})
    proxies = [make_douane(policy, env={"DOUANE_INSTANCE_ID": f"proxy-{i}"}) for i in range(3)]

    def call(n: int) -> tuple[str, str]:
        d = proxies[n % 3]  # round robin, as a load balancer would
        with d.http() as http:
            r = http.post("https://api.openai.com/v1/chat/completions",
                          json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"hello {n}"}]})
        assert r.status_code == 200, r.text
        return r.headers["x-douane-request-id"], f"proxy-{n % 3}"

    with ThreadPoolExecutor(12) as pool:
        seen = list(pool.map(call, range(3 * CALLS_PER_INSTANCE)))
    for d in proxies:
        assert d.stop() == 0, d.log()

    done = subprocess.run([sys.executable, "-m", "douane.cli", "audit", "query", "--fleet", str(fleet),
                           "--format", "json", "SELECT id, instance_id, status FROM requests"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert len(rows) == len(seen) == 3 * CALLS_PER_INSTANCE, "each call once: none lost, none twice"
    assert {(r["id"], r["instance_id"]) for r in rows} == set(seen), "each row is the call its client saw"
    assert all(r["status"] == 200 for r in rows)
    # what an auditor's own DuckDB (or Spark, Trino) reads: Hive-partitioned Parquet, no douane code
    per_instance = duckdb.connect().execute(
        f"SELECT instance_id, count(*) FROM read_parquet('{fleet_glob(fleet)}', hive_partitioning = true) "
        "GROUP BY 1 ORDER BY 1").fetchall()
    assert per_instance == [(f"proxy-{i}", CALLS_PER_INSTANCE) for i in range(3)]
    for d in proxies:  # each instance still has its own full store, bodies included
        local = d.rows(expect=CALLS_PER_INSTANCE)
        assert len(local) == CALLS_PER_INSTANCE and all(r["request_body"] for r in local)


def test_querying_a_fleet_folder_with_nothing_yet_says_what_to_do(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "douane.cli", "audit", "query", "--fleet", str(tmp_path),
                           "SELECT count(*) FROM requests"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "audit.fleet" in done.stderr
