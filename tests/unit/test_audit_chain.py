"""The hash chain over audit records: what is hashed, how records link, what merges and restarts keep."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from douane.audit import AuditStore, AuditWriter, query
from douane.audit.chain import _text_sql, content_digest_sql, genesis, link
from douane.audit.manifest import inspect_segment
from douane.audit.record import COLUMNS
from douane.audit.settings import AuditSettings
from douane.audit.signing import Signer, load_public_key
from douane.audit.verify import verify_store
from tests.adversarial.audit_support import record, wait_until
from tests.adversarial.audit_tamper import live, make_key, manifest


def writer(path: Path, **kw: object) -> AuditWriter:
    kw.setdefault("min_interval", 0)
    w = AuditWriter(AuditStore(path), **kw)  # type: ignore[arg-type]
    w.start()
    return w


def fill(w: AuditWriter, n: int, start: int = 0, **kw: object) -> None:
    for i in range(start, start + n):
        w.submit(record(i, request_body=f"prompt {i}", response_body=f"answer {i}", cost_usd=0.001 * i, **kw))
        assert w.flush()


@pytest.mark.parametrize(("sql_type", "value", "text"), [
    ("DOUBLE", "0.1", "0.1"), ("DOUBLE", "1e-7", "1e-07"), ("DOUBLE", "3", "3.0"), ("DOUBLE", "1e300", "1e+300"),
    ("DOUBLE", "123456.789", "123456.789"), ("BIGINT", "-42", "-42"), ("BOOLEAN", "false", "false"),
    ("TIMESTAMPTZ", "'2024-01-01 00:00:00.123456+00'", "1704067200123456"),
    ("VARCHAR[]", "['a', NULL, 'bé']", "3[1:a~3:bé"), ("VARCHAR", "'x'", "x"),
])
def test_canonical_texts_are_pinned(sql_type: str, value: str, text: str) -> None:
    """A DuckDB release that formats one of these differently would make every older record fail
    verification: this test fails first, at the upgrade."""
    con = duckdb.connect()
    assert con.execute(f"SELECT {_text_sql('v', sql_type)} FROM (SELECT CAST({value} AS {sql_type}) AS v)"
                       ).fetchone()[0] == text


def test_a_column_added_later_leaves_older_digests_alone() -> None:
    con = duckdb.connect()
    row = "SELECT 'r1' AS id, TIMESTAMPTZ '2024-01-01 00:00:00+00' AS ts, 12 AS seq, NULL::VARCHAR AS guards"
    old_columns = [("id", "VARCHAR"), ("ts", "TIMESTAMPTZ"), ("seq", "BIGINT")]
    new_columns = [("id", "VARCHAR"), ("guards", "VARCHAR"), ("ts", "TIMESTAMPTZ"), ("seq", "BIGINT")]
    before = con.execute(f"SELECT {content_digest_sql(old_columns)} FROM ({row})").fetchone()[0]
    after = con.execute(f"SELECT {content_digest_sql(new_columns)} FROM ({row})").fetchone()[0]
    assert before == after
    changed = con.execute(f"SELECT {content_digest_sql(old_columns)} "
                          f"FROM ({row.replace('12 AS seq', '13 AS seq')})").fetchone()[0]
    assert changed != before


def test_fields_cannot_trade_bytes() -> None:
    """`ab` + `c` and `a` + `bc` in two columns are two different records."""
    con = duckdb.connect()
    cols = [("client", "VARCHAR"), ("team", "VARCHAR")]
    one = con.execute(f"SELECT {content_digest_sql(cols)} FROM (SELECT 'ab' AS client, 'c' AS team)").fetchone()[0]
    two = con.execute(f"SELECT {content_digest_sql(cols)} FROM (SELECT 'a' AS client, 'bc' AS team)").fetchone()[0]
    assert one != two


def test_records_link_to_the_one_before(tmp_path: Path) -> None:
    w = writer(tmp_path / "a.duckdb")
    fill(w, 5)
    w.close()
    rows = query(w.store.db_path, f"SELECT seq, hash, {content_digest_sql(COLUMNS)}, instance_id, douane_version "
                                  f"FROM requests ORDER BY seq")[1]
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5]
    prev = genesis(rows[0][3])
    for _, stored, digest, _, version in rows:
        assert stored == link(prev, digest)
        assert version
        prev = stored
    assert manifest(w.store)["heads"] == {rows[0][3]: [5, prev]}


def test_the_chain_goes_on_through_merges_and_restarts(tmp_path: Path) -> None:
    w = writer(tmp_path / "a.duckdb", compact_at=4, fanout=4, commit_delay=0.01)
    fill(w, 40)
    wait_until(lambda: not w._segments.merging and not w._segments.doomed, "merges committed and reaped")
    w.close()
    merged = [n for n in live(w.store) if inspect_segment(duckdb.connect(), w.store.segments / n).sources]
    assert merged, "the test needs merged segments"
    w2 = writer(tmp_path / "a.duckdb")
    fill(w2, 5, start=40)
    w2.close()
    seqs = [r[0] for r in query(w.store.db_path, "SELECT seq FROM requests ORDER BY seq")[1]]
    assert seqs == list(range(1, 46))
    report = verify_store(w.store)
    assert report.ok, report.findings
    assert report.checked_rows == 45 and report.instances[next(iter(report.instances))]["last"] == 45


def test_an_instance_id_from_the_settings_starts_its_own_chain(tmp_path: Path) -> None:
    w = writer(tmp_path / "a.duckdb")
    fill(w, 3)
    w.close()
    w2 = writer(tmp_path / "a.duckdb", settings=AuditSettings(instance_id="proxy-b"))
    fill(w2, 2, start=3)
    w2.close()
    rows = query(w.store.db_path, "SELECT instance_id, seq FROM requests ORDER BY id")[1]
    own = rows[0][0]
    assert rows == [(own, 1), (own, 2), (own, 3), ("proxy-b", 1), ("proxy-b", 2)]
    report = verify_store(w.store)
    assert report.ok, report.findings
    assert set(report.instances) == {own, "proxy-b"}


def test_signed_seals_let_verify_trust_whole_segments(tmp_path: Path) -> None:
    key = make_key(tmp_path)
    w = writer(tmp_path / "a.duckdb", compact_at=4, fanout=4, commit_delay=0.01,
               settings=AuditSettings(signer=Signer.from_file(key)))
    fill(w, 12)
    w.close()
    trusted = verify_store(w.store, [load_public_key(key)])
    assert trusted.ok, trusted.findings
    assert trusted.sealed_segments == trusted.segments > 0 and trusted.checked_rows == 0
    untrusted = verify_store(w.store)  # no key given: every record is read
    assert untrusted.ok and untrusted.checked_rows == 12
    other = verify_store(w.store, [load_public_key(make_key(tmp_path, "other.pem"))])
    assert not other.ok and {f.kind for f in other.findings} == {"signature"}


def test_a_checkpoint_is_written_at_close_and_when_due(tmp_path: Path) -> None:
    w = writer(tmp_path / "a.duckdb", settings=AuditSettings(checkpoint_every=0.05))
    fill(w, 2)
    wait_until(lambda: bool(w._trail and w._trail.checkpoints), "a checkpoint while running")
    fill(w, 1, start=2)
    w.close()
    last = next(iter(w._trail.checkpoints.values())) if w._trail else {}
    assert last["seq"] == 3 and last["hash"] == manifest(w.store)["heads"][last["instance"]][1]


def test_bodies_have_a_salted_digest(tmp_path: Path) -> None:
    w = writer(tmp_path / "a.duckdb")
    w.submit(record(1, request_body="same", response_body="same"))
    w.submit(record(2, request_body="same", response_body="same"))
    w.submit(record(3))
    assert w.flush()
    w.close()
    rows = query(w.store.db_path, "SELECT body_salt, body_digest FROM requests ORDER BY seq")[1]
    assert rows[0][1] != rows[1][1], "the same bodies get different digests: a digest confirms no guess"
    assert all(len(r[0]) == 32 for r in rows[:2]) and rows[2] == (None, None)




def test_a_rebuilt_manifest_keeps_segments_in_chain_order(tmp_path: Path) -> None:
    """A merge at a higher level gets a name newer than segments written after its sources: a
    manifest rebuilt from the files places it by its oldest source, not by its name."""
    from douane.audit.manifest import SegmentInfo, rebuild

    def name(n: int) -> str:
        return f"{n:020d}-1-{n:06d}.parquet"
    merged = SegmentInfo(name(22), rows=16, sources=[name(5), name(10), name(15), name(20)], level=2, place=name(1))
    written = SegmentInfo(name(21), rows=1, place=name(21))  # an L0 segment written before that merge began
    assert rebuild([written, merged]).live == [name(22), name(21)]
    w = writer(tmp_path / "a.duckdb", compact_at=2, fanout=2, commit_delay=0.01)
    fill(w, 8)
    w.close()
    con = duckdb.connect()
    infos = [inspect_segment(con, w.store.segments / n) for n in live(w.store)]
    assert any(i.sources for i in infos) and all(i.place <= i.name for i in infos)
    assert [i.place for i in infos] == sorted(i.place for i in infos), "merges record their oldest source's place"


def test_checkpoints_and_tombstones_are_posted_to_a_copy_url(tmp_path: Path) -> None:
    import http.server
    import json
    import threading

    received: list[dict] = []

    class Sink(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the handler's name
            received.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/trail"
        w = writer(tmp_path / "a.duckdb", settings=AuditSettings(checkpoint_copy=url))
        fill(w, 3)
        w.close()
    finally:
        server.shutdown()
    trail = [json.loads(line) for line in (w.store.segments / "trail.jsonl").read_text().splitlines()]
    assert received == trail and trail[-1]["type"] == "checkpoint" and trail[-1]["seq"] == 3


def test_the_policy_keys_and_the_instance_id_are_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from douane.gateway import ConfigError, audit_settings
    from douane.policy import Policy

    with pytest.raises(ValueError, match="bodies leave with their rows"):
        Policy.model_validate({"audit": {"retention_days": {"bodies": 30, "rows": 7}}})
    with pytest.raises(ValueError, match="http:// or https://"):
        Policy.model_validate({"audit": {"checkpoint_copy": "ftp://somewhere/trail"}})
    bad_key = tmp_path / "key.pem"
    bad_key.write_text("not a key")
    with pytest.raises(ConfigError, match="audit.signing_key_file: .*openssl genpkey -algorithm ed25519"):
        audit_settings(Policy.model_validate({"audit": {"signing_key_file": str(bad_key)}}))
    monkeypatch.setenv("DOUANE_INSTANCE_ID", "no spaces please")
    with pytest.raises(ConfigError, match="DOUANE_INSTANCE_ID"):
        audit_settings(Policy())
    monkeypatch.setenv("DOUANE_INSTANCE_ID", "proxy-eu-1")
    key = make_key(tmp_path)
    settings = audit_settings(Policy.model_validate({"audit": {"signing_key_file": str(key),
                                                               "retention_days": {"bodies": 30, "rows": 400}}}))
    assert settings.instance_id == "proxy-eu-1" and settings.signer is not None
    assert (settings.retention.bodies_days, settings.retention.rows_days) == (30, 400)
