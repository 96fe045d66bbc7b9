"""An attacker with write access to the audit store: each change is caught by verify, which says where."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from douane.audit import AuditStore, AuditWriter
from douane.audit.chain import genesis, link
from douane.audit.seal import make_seal
from douane.audit.settings import AuditSettings
from douane.audit.signing import Signer, load_public_key
from douane.audit.verify import VerifyReport, verify_store
from tests.adversarial.audit_support import record
from tests.adversarial.audit_tamper import (
    delete_record,
    edit_field,
    live,
    make_key,
    manifest,
    remove_segment,
    rewrite,
    segment_of,
    swap_live,
    write_manifest,
)

RECORDS = 12


def build(path: Path, settings: AuditSettings | None = None) -> AuditStore:
    """A closed store of RECORDS records in single-record segments (seq n in segment n)."""
    w = AuditWriter(AuditStore(path), min_interval=0, settings=settings)
    w.start()
    for i in range(RECORDS):
        w.submit(record(i, request_body=f"prompt {i}", response_body=f"answer {i}", client=f"c{i % 3}"))
        assert w.flush()
    w.close()
    assert verify_store(w.store).ok
    return w.store


@pytest.fixture()
def store(tmp_path: Path) -> AuditStore:
    return build(tmp_path / "a.duckdb")


def failures(report: VerifyReport) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for f in report.findings:
        if f.severity == "fail":
            found.setdefault(f.kind, []).append(f"{f.where}: {f.detail}")
    return found


def test_an_edited_field_is_named_by_segment_and_seq(store: AuditStore) -> None:
    path = edit_field(store, 5, "cost_usd", "0.0")
    found = failures(verify_store(store))
    assert path.name in found["altered_segment"][0]
    assert any(f"{path.name}, instance" in w and "seq 5 " in w for w in found["altered_record"])


def test_an_edit_without_the_metadata_is_still_checked_record_by_record(store: AuditStore) -> None:
    edit_field(store, 7, "decision", "'allowed-ish'", keep_metadata=False)
    found = failures(verify_store(store))
    assert any("seq 7 " in w for w in found["altered_record"]) and "segment_metadata" in found


def test_a_record_rehashed_after_an_edit_breaks_the_next_link(store: AuditStore) -> None:
    """The attacker recomputes the edited record's own hash: the record after it no longer links."""
    path = segment_of(store, 4)
    con = duckdb.connect()
    from douane.audit.chain import content_digest_sql
    from douane.audit.record import COLUMNS
    prev = con.execute(f"SELECT hash FROM read_parquet('{segment_of(store, 3)}') WHERE seq = 3").fetchone()[0]
    digest = con.execute(f"SELECT {content_digest_sql(COLUMNS)} FROM (SELECT * REPLACE ('mallory' AS client) "
                         f"FROM read_parquet('{path}') WHERE seq = 4)").fetchone()[0]
    rewrite(path, f"SELECT * REPLACE ('mallory' AS client, '{link(prev, digest)}' AS hash) FROM t")
    found = failures(verify_store(store))
    assert any("seq 5 " in w for w in found["altered_record"]), found


def test_a_deleted_record_leaves_a_named_gap(store: AuditStore) -> None:
    data = manifest(store)
    first_segment = live(store)[0]
    delete_record(store, 1)
    found = failures(verify_store(store))
    assert "missing_records" in found and any("seq 1..1" in w for w in found["missing_records"]), found
    assert data["live"] != [], first_segment


def test_a_removed_segment_leaves_a_named_gap(store: AuditStore) -> None:
    name = segment_of(store, 6).name
    remove_segment(store, name)
    found = failures(verify_store(store))
    assert any("seq 6..6" in w for w in found["missing_records"]), found


def test_reordered_segments_are_caught(store: AuditStore) -> None:
    swap_live(store, 2, 8)
    found = failures(verify_store(store))
    assert "out_of_order" in found and not found.keys() - {"out_of_order"}, found


def test_a_truncated_tail_is_caught_by_the_head_and_the_checkpoint(store: AuditStore) -> None:
    remove_segment(store, live(store)[-1])
    assert any(f"seq {RECORDS - 1}" in w for w in failures(verify_store(store))["truncated_tail"])


def test_a_careful_truncation_is_caught_by_the_checkpoint(store: AuditStore) -> None:
    remove_segment(store, live(store)[-1], fix_head=True)
    found = failures(verify_store(store))
    assert any("trail.jsonl entry" in w and f"up to seq {RECORDS}" in w for w in found["truncated_tail"]), found


def test_a_chain_rewritten_to_its_end_is_caught_by_the_checkpoint(store: AuditStore) -> None:
    """Unsigned: the attacker recomputes every hash after the edit, the seals and the head; only the
    checkpoint, in the trail, still says what the last record's hash was."""
    from douane.audit.chain import content_digest_sql
    from douane.audit.record import COLUMNS
    con = duckdb.connect()
    data = manifest(store)
    inst = next(iter(data["heads"]))
    prev = genesis(inst)
    for name in live(store):
        path = store.segments / name
        seq, digest = con.execute(f"SELECT seq, {content_digest_sql(COLUMNS)} FROM (SELECT * REPLACE (CASE WHEN "
                                  f"seq = 2 THEN 'mallory' ELSE client END AS client) FROM read_parquet('{path}'))"
                                  ).fetchone()
        prev = link(prev, digest)
        rewrite(path, f"SELECT * REPLACE (CASE WHEN seq = 2 THEN 'mallory' ELSE client END AS client, "
                      f"'{prev}' AS hash) FROM t")
        data["seals"][name] = make_seal(path, None, None)
    data["heads"][inst] = [RECORDS, prev]
    write_manifest(store, data)
    found = failures(verify_store(store))
    assert "rewritten_chain" in found and "altered_record" not in found, found


def test_edited_bodies_are_caught(store: AuditStore) -> None:
    edit_field(store, 3, "response_body", "'a nicer answer'")
    found = failures(verify_store(store))
    assert any("seq 3 " in w for w in found["altered_bodies"]), found


def test_bodies_removed_without_a_tombstone_are_caught(store: AuditStore) -> None:
    path = segment_of(store, 9)
    rewrite(path, "SELECT * REPLACE (NULL::VARCHAR AS request_body, NULL::VARCHAR AS response_body) FROM t")
    found = failures(verify_store(store))
    assert any("seq 9 " in w for w in found["erased_without_tombstone"]), found


def test_a_truncated_segment_file_is_caught(store: AuditStore) -> None:
    path = segment_of(store, 2)
    path.write_bytes(path.read_bytes()[:100])
    found = failures(verify_store(store))
    assert path.name in found["unreadable_segment"][0], found
    assert any("seq 2..2" in w for w in found["missing_records"])


def test_a_removed_checkpoint_is_caught(store: AuditStore) -> None:
    trail = store.segments / "trail.jsonl"
    w = AuditWriter(store, min_interval=0)  # a second run: a second checkpoint
    w.start()
    w.submit(record("late"))
    w.close()
    lines = trail.read_bytes().splitlines(keepends=True)
    assert len(lines) == 2
    trail.write_bytes(lines[1])
    assert "trail" in failures(verify_store(store))


def test_a_copy_of_the_trail_elsewhere_catches_a_trail_cut_short(tmp_path: Path) -> None:
    copy = tmp_path / "elsewhere" / "trail-copy.jsonl"
    copy.parent.mkdir()
    store = build(tmp_path / "a.duckdb", AuditSettings(checkpoint_copy=str(copy)))
    assert copy.read_bytes() == (store.segments / "trail.jsonl").read_bytes()
    remove_segment(store, live(store)[-1], fix_head=True)
    (store.segments / "trail.jsonl").write_bytes(b"")
    alone = verify_store(store)  # the store's own evidence was rewritten consistently: only the copy knows
    assert alone.ok and any(f.kind == "unanchored" for f in alone.findings)
    found = failures(verify_store(store, copies=[copy]))
    assert "truncated_tail" in found and "trail" in found, found


def test_with_a_key_an_edited_segment_resealed_without_it_is_caught(tmp_path: Path) -> None:
    key = make_key(tmp_path)
    store = build(tmp_path / "a.duckdb", AuditSettings(signer=Signer.from_file(key)))
    path = edit_field(store, 4, "model", "'gpt-cheap'")
    data = manifest(store)
    data["seals"][path.name] = make_seal(path, None, None)  # matching bytes, but unsigned
    write_manifest(store, data)
    report = verify_store(store, [load_public_key(key)])
    found = failures(report)
    assert any("seq 4 " in w for w in found["altered_record"]), found
    assert report.sealed_segments == RECORDS - 1


def test_a_forged_tombstone_without_the_key_is_caught(tmp_path: Path) -> None:
    key = make_key(tmp_path)
    store = build(tmp_path / "a.duckdb", AuditSettings(signer=Signer.from_file(key)))
    trail = store.segments / "trail.jsonl"
    last = json.loads(trail.read_bytes().splitlines()[-1])
    forged = {"n": last["n"] + 1, "prev": "0" * 64, "type": "erase", "bodies": {}}
    trail.write_bytes(trail.read_bytes() + json.dumps(forged).encode() + b"\n")
    found = failures(verify_store(store, [load_public_key(key)]))
    assert "signature" in found and "trail" in found, found
