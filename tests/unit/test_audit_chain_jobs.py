"""Erasure and expiry: jobs run by the writer, leaving tombstones that keep verify passing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from douane.audit import AuditRecord, AuditStore, AuditWriter, query
from douane.audit.jobs import Executor, Job, new_job_name, submit, wait_result
from douane.audit.settings import AuditSettings, Retention
from douane.audit.signing import Signer, load_public_key
from douane.audit.verify import verify_store
from tests.adversarial.audit_support import VirtualClock, wait_until
from tests.adversarial.audit_tamper import make_key

NOW = datetime.now(UTC)


def old_record(i: int, days_ago: float, client: str = "c") -> AuditRecord:
    return AuditRecord(id=f"r{i}", ts=NOW - timedelta(days=days_ago), client=client, provider="openai",
                       request_body=f"prompt {i} from {client}", response_body=f"answer {i}")


def start(path: Path, **kw: object) -> AuditWriter:
    kw.setdefault("min_interval", 0)
    kw.setdefault("commit_delay", 0.01)
    w = AuditWriter(AuditStore(path), **kw)  # type: ignore[arg-type]
    w.start()
    return w


def run(w: AuditWriter, job: Job) -> dict:
    submit(w.store, job)
    result = wait_result(w.store, job.name, 30)
    assert result is not None, "the writer did not run the job"
    return result


def erase(client: str | None = None, ids: list[str] | None = None, reason: str = "DSAR 7") -> Job:
    return Job(new_job_name("erase"), "erase", reason=reason, by="dpo@example", selector=f"client {client}",
               client=client, ids=ids)


def bodies(w: AuditWriter) -> dict[str, int]:
    return dict(query(w.store.db_path, "SELECT client, count(request_body) FROM requests GROUP BY 1")[1])


@pytest.fixture()
def w(tmp_path: Path):
    writer = start(tmp_path / "a.duckdb", compact_at=4, fanout=4)
    for i in range(20):
        writer.submit(old_record(i, 20 - i, client=("alice", "bob")[i % 2]))
        assert writer.flush()
    yield writer
    writer.close()


def test_erasing_a_clients_bodies_keeps_rows_and_verify(w: AuditWriter) -> None:
    result = run(w, erase("alice"))
    assert result["ok"] and result["records"] == 10
    assert bodies(w) == {"alice": 0, "bob": 10}
    assert query(w.store.db_path, "SELECT count(*), count(body_digest) FROM requests WHERE client = 'alice'")[1] == \
        [(10, 10)]
    report = verify_store(w.store)
    assert report.ok, report.findings
    (tomb,) = report.tombstones
    assert (tomb["type"], tomb["reason"], tomb["by"], tomb["records"]) == ("erase", "DSAR 7", "dpo@example", 10)


def test_erasing_by_ids(w: AuditWriter) -> None:
    assert run(w, erase(ids=["r1", "r2", "r404"]))["records"] == 2
    assert query(w.store.db_path, "SELECT id FROM requests WHERE request_body IS NULL ORDER BY id")[1] == \
        [("r1",), ("r2",)]
    assert verify_store(w.store).ok


def test_an_erasure_covers_calls_submitted_before_it(w: AuditWriter) -> None:
    w.submit(old_record(99, 0, client="alice"))  # not yet written when the job is dropped
    assert run(w, erase("alice"))["records"] == 11
    assert bodies(w)["alice"] == 0


def test_nothing_to_erase_is_answered_without_a_tombstone(w: AuditWriter) -> None:
    result = run(w, erase("carol"))
    assert result == {"ok": True, "job": result["job"], "records": 0, "segments": 0}
    assert verify_store(w.store).tombstones == []


def test_purge_removes_the_oldest_records_and_expired_bodies(w: AuditWriter) -> None:
    job = Job(new_job_name("purge"), "purge", reason="retention", by="test",
              rows_before=(NOW - timedelta(days=14.5)).isoformat(),
              bodies_before=(NOW - timedelta(days=9.5)).isoformat())
    result = run(w, job)
    assert result["ok"]
    rows = query(w.store.db_path, "SELECT seq, request_body IS NOT NULL FROM requests ORDER BY seq")[1]
    assert [r[0] for r in rows] == list(range(7, 21)), "records 1..6 (older than 14.5 days) are gone"
    assert [r[0] for r in rows if not r[1]] == [7, 8, 9, 10, 11], "bodies older than 9.5 days are erased"
    report = verify_store(w.store)
    assert report.ok, report.findings
    inst = next(iter(report.instances))
    assert report.instances[inst]["first"] == 7 and report.instances[inst]["removed_through"] == 6


def test_purge_then_more_records_still_verifies(w: AuditWriter) -> None:
    run(w, Job(new_job_name("purge"), "purge", reason="r", by="t", rows_before=NOW.isoformat()))
    assert query(w.store.db_path, "SELECT count(*) FROM requests")[1] == [(0,)]
    w.submit(old_record(50, 0))
    assert w.flush()
    report = verify_store(w.store)
    assert report.ok, report.findings
    assert next(iter(report.instances.values()))["first"] == 21


def test_a_tombstone_whose_rewrite_never_committed_is_run_again(tmp_path: Path) -> None:
    """A crash between the tombstone and the commit: verify says the job has not finished; the next
    writer runs it (a second tombstone for the same job), and verify passes."""
    writer = start(tmp_path / "a.duckdb")
    for i in range(6):
        writer.submit(old_record(i, 1, client=("alice", "bob")[i % 2]))
    assert writer.flush()
    job = erase("alice")
    writer.close()
    w2 = start(tmp_path / "a.duckdb", settings=AuditSettings(job_poll=3600))  # polls once, at start
    assert w2._con is not None and w2._trail is not None
    executor = Executor(w2.store, w2._con, w2._segments, w2._trail)
    executor.tombstone(job, executor.select(job))  # ... and the crash
    w2.close()
    half = verify_store(w2.store)
    assert half.ok and any(f.kind == "tombstone" and "not finished" in f.detail for f in half.findings)
    w3 = start(tmp_path / "a.duckdb")
    assert run(w3, job)["ok"]
    w3.close()
    report = verify_store(w3.store)
    assert report.ok and not [f for f in report.findings if f.kind == "tombstone"], report.findings
    assert [t["job"] for t in report.tombstones] == [job.name, job.name]


def test_a_malformed_job_is_refused_and_answered(w: AuditWriter) -> None:
    name = new_job_name("erase")
    folder = w.store.segments / "jobs"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps({"name": name, "kind": "erase", "reason": "x", "by": "y",
                                                     "where": "1=1; DROP TABLE x"}))
    result = wait_result(w.store, name, 30)
    assert result is not None and not result["ok"] and "client or a list of ids" in result["error"]
    assert (w.store.quarantine / f"{name}.json").exists()
    assert bodies(w) == {"alice": 10, "bob": 10}


def test_expiry_runs_in_the_writer(tmp_path: Path) -> None:
    clock = VirtualClock()
    writer = start(tmp_path / "a.duckdb", clock=clock,
                   settings=AuditSettings(retention=Retention(bodies_days=5, rows_days=10), retention_every=60))
    for i in range(12):
        writer.submit(old_record(i, 12.5 - i))
    assert writer.flush()
    wait_until(lambda: query(writer.store.db_path, "SELECT min(seq) FROM requests")[1] == [(4,)],
               "records older than 10 days removed by the writer's own expiry")
    writer.close()
    rows = query(writer.store.db_path, "SELECT seq FROM requests WHERE request_body IS NULL ORDER BY seq")[1]
    assert [r[0] for r in rows] == [4, 5, 6, 7, 8], "bodies older than 5 days"
    report = verify_store(writer.store)
    assert report.ok, report.findings
    assert report.tombstones[0]["by"] == "douane (audit.retention_days)"


def test_tombstones_are_signed_with_the_operators_key(tmp_path: Path) -> None:
    key = make_key(tmp_path)
    writer = start(tmp_path / "a.duckdb", settings=AuditSettings(signer=Signer.from_file(key)))
    for i in range(4):
        writer.submit(old_record(i, 1, client="alice"))
    assert writer.flush()
    assert run(writer, erase("alice"))["ok"]
    writer.close()
    report = verify_store(writer.store, [load_public_key(key)])
    assert report.ok and report.sealed_segments == report.segments, report.findings
    trail = [json.loads(line) for line in (writer.store.segments / "trail.jsonl").read_text().splitlines()]
    assert {e["type"] for e in trail} == {"erase", "checkpoint"} and all("sig" in e for e in trail)


def test_a_job_never_reseals_a_segment_changed_outside_douane(w: AuditWriter) -> None:
    from tests.adversarial.audit_tamper import edit_field
    wait_until(lambda: not w._segments.merging, "merges committed (a merge under way reads the segment first)")
    path = edit_field(w.store, 4, "client", "'alice'")  # seq 4 was bob's
    result = run(w, erase("alice"))
    assert not result["ok"] and path.name in result["error"]
    found = {f.kind for f in verify_store(w.store).findings if f.severity == "fail"}
    assert {"altered_segment", "altered_record"} <= found
