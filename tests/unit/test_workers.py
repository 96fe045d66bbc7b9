"""douane.workers without processes: the start-up rule, the audit channel, the merged metrics."""

from __future__ import annotations

import socket
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from douane.audit.record import AuditRecord
from douane.audit.store import AuditStore
from douane.audit.writer import AuditWriter
from douane.policy.model import Policy
from douane.workers import ChannelWriter, Sink, WorkersRefused, refuse_split_counters
from douane.workers_admin import Merged, merge


class Collecting:
    """The parent's AuditWriter, as the sink sees it."""

    def __init__(self) -> None:
        self.records: list[AuditRecord] = []

    def submit(self, record: AuditRecord) -> None:
        self.records.append(record)


def policy(**keys: Any) -> Policy:
    return Policy.model_validate({"version": 1, **keys})


LIMITED = {"teams": {"support": {"models": ["*"], "requests_per_minute": 10}}}


def test_limits_in_memory_are_refused_with_several_workers() -> None:
    with pytest.raises(WorkersRefused) as e:
        refuse_split_counters(policy(**LIMITED), 2, "policy p.yaml")
    message = str(e.value)
    assert "policy p.yaml" in message and "teams.support" in message
    assert "state.backend: memory" in message and "backend: redis" in message and "--workers 1" in message


@pytest.mark.parametrize(("keys", "workers"), [
    (LIMITED, 1),  # one process: its memory is exact
    ({**LIMITED, "state": {"backend": "redis", "url": "redis://127.0.0.1:6379/0"}}, 4),
    ({"teams": {"support": {"models": ["*"]}}}, 4),  # nothing counted
])
def test_what_several_workers_can_count_exactly_starts(keys: dict[str, Any], workers: int) -> None:
    refuse_split_counters(policy(**keys), workers)


def channel() -> tuple[ChannelWriter, Sink, Collecting, list[dict[str, Any]]]:
    ours, theirs = socket.socketpair()
    collected, messages = Collecting(), []
    sink = Sink(ours, collected, messages.append)  # type: ignore[arg-type]
    sink.start()
    writer = ChannelWriter(theirs, batch=3)
    writer.start()
    return writer, sink, collected, messages


def test_records_cross_the_channel_whole_and_in_order() -> None:
    writer, sink, collected, messages = channel()
    ts = datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    records = [AuditRecord(id=f"r{i}", ts=ts, client="bot", pii_entities=["EMAIL_ADDRESS"], cost_usd=0.25,
                           request_body="caf\u00e9 \ud800 \U0001f600 " + "x" * 200_000 * (i == 2),
                           tool_calls=[{"tool": "search", "decision": "allowed"}]) for i in range(7)]
    writer.say("ready", pid=1)
    for r in records:
        writer.submit(r)
    writer.say("bye", unrecorded=0)
    assert writer.flush(10)
    health = writer.close()
    assert sink.done.wait(10)
    assert health.ok and health.written == 7 and health.pending == 0
    assert collected.records == records  # a lone surrogate, a long body, the tool calls and ts included
    assert [m["t"] for m in messages] == ["ready", "bye"]
    assert sink.records == 7 and sink.unreadable == 0


def test_a_line_cut_off_by_a_killed_worker_is_reported_not_fatal() -> None:
    ours, theirs = socket.socketpair()
    collected = Collecting()
    sink = Sink(ours, collected, lambda m: None)  # type: ignore[arg-type]
    sink.start()
    whole = ChannelWriter(theirs)
    whole.start()
    whole.submit(AuditRecord(id="kept", ts=datetime.now(UTC)))
    assert whole.flush(10)
    theirs.sendall(b'{"t":"r","v":{"id":"half')  # the process died mid-write
    theirs.close()
    assert sink.done.wait(10)
    assert [r.id for r in collected.records] == ["kept"]
    assert sink.unreadable == 1


def test_a_worker_whose_parent_is_gone_keeps_its_records_for_the_next_start(tmp_path: Path) -> None:
    store = AuditStore(tmp_path / "a.duckdb")
    ours, theirs = socket.socketpair()
    ours.close()
    writer = ChannelWriter(theirs, store)
    writer.start()
    writer.submit(AuditRecord(id="a", ts=datetime.now(UTC)))
    assert not writer.flush(10)
    writer.submit(AuditRecord(id="b", ts=datetime.now(UTC)))
    health = writer.close()
    assert not health.ok and "parent" in (health.reason or "")
    assert (health.spilled, health.lost) == (2, 0)
    audit = AuditWriter(store)
    audit.start()
    audit.close()
    ids = {r[0] for r in duckdb.connect(str(store.db_path), read_only=True).execute(
        f"SELECT id FROM read_parquet('{store.segments}/*.parquet')").fetchall()}
    assert {"a", "b"} <= ids, "the next start folds the worker's records in"


def test_without_a_store_the_records_a_gone_parent_missed_are_counted_lost() -> None:
    ours, theirs = socket.socketpair()
    ours.close()
    writer = ChannelWriter(theirs)
    writer.start()
    writer.submit(AuditRecord(id="a", ts=datetime.now(UTC)))
    assert not writer.flush(10)
    health = writer.close()
    assert not health.ok and health.lost == 1 and health.spilled == 0


def test_flush_waits_for_a_slow_parent() -> None:
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    writer = ChannelWriter(theirs)
    writer.start()
    for i in range(50):
        writer.submit(AuditRecord(id=f"r{i}", ts=datetime.now(UTC), request_body="y" * 5000))
    assert not writer.flush(0.2), "nobody reads: the records cannot all be handed over yet"
    collected = Collecting()
    sink = Sink(ours, collected, lambda m: None)  # type: ignore[arg-type]
    reader = threading.Thread(target=sink._run)
    reader.start()
    assert writer.flush(10)
    writer.close()
    reader.join(10)
    assert len(collected.records) == 50


WORKER_1 = """# HELP douane_calls_total Calls
# TYPE douane_calls_total counter
douane_calls_total{provider="openai",team="",decision="allowed"} 3.0
douane_calls_created{provider="openai",team="",decision="allowed"} 1.7e9
# HELP douane_latency_seconds Latency
# TYPE douane_latency_seconds histogram
douane_latency_seconds_bucket{le="0.1"} 2.0
douane_latency_seconds_bucket{le="+Inf"} 3.0
douane_latency_seconds_count 3.0
douane_latency_seconds_sum 0.5
# HELP douane_calls_in_flight In flight
# TYPE douane_calls_in_flight gauge
douane_calls_in_flight 2.0
# HELP douane_breaker_open Breaker
# TYPE douane_breaker_open gauge
douane_breaker_open{upstream="a"} 1.0
# HELP douane_audit_queue_depth Queue
# TYPE douane_audit_queue_depth gauge
douane_audit_queue_depth 9.0
"""
WORKER_2 = WORKER_1.replace("} 3.0", "} 4.0").replace("in_flight 2.0", "in_flight 5.0").replace(
    'upstream="a"} 1.0', 'upstream="a"} 0.0').replace("_sum 0.5", "_sum 1.5")


def test_metrics_of_every_worker_merge_as_their_meaning_says() -> None:
    from prometheus_client.core import GaugeMetricFamily

    own = GaugeMetricFamily("douane_audit_queue_depth", "Queue")
    own.add_metric([], 1.0)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Merged(merge([WORKER_1, WORKER_2], [own])))
    text = generate_latest(registry).decode()
    assert 'douane_calls_total{decision="allowed",provider="openai",team=""} 7.0' in text
    assert 'douane_latency_seconds_bucket{le="+Inf"} 7.0' in text and "douane_latency_seconds_sum 2.0" in text
    assert "douane_calls_in_flight 7.0" in text  # summed: calls in flight on either worker
    assert 'douane_breaker_open{upstream="a"} 1.0' in text  # the largest: open on one worker is open
    assert "douane_audit_queue_depth 1.0" in text  # the parent's own: it writes the audit
    assert "_created" not in text


def test_shares_name_the_least_busy_other_worker_and_forget_a_dead_one() -> None:
    from douane.workers import Shares, shared_counts

    fd = shared_counts(3)
    parent, first, second = Shares(fd, 3), Shares(fd, 3, 0), Shares(fd, 3, 1)
    first.mine(5)
    second.mine(2)
    assert first.least_other() == 0, "the third has not counted yet: zero open"
    parent.set(2, Shares.GONE)  # the third died
    assert first.least_other() == 2 and second.least_other() == 5


async def test_a_balanced_server_serves_and_counts_its_open_connections() -> None:
    import asyncio

    from douane.workers import BalancedServer, Shares, shared_counts

    fd = shared_counts(2)
    other, mine = Shares(fd, 2, 1), Shares(fd, 2, 0)
    other.set(1, 0)
    listener = socket.create_server(("127.0.0.1", 0))  # blocking, as the parent hands it over
    release = asyncio.Event()
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readline())
        await release.wait()
        writer.close()

    server = BalancedServer(listener, handle, mine)
    assert not listener.getblocking(), "a connection another worker took first must not block this one's loop"
    port = listener.getsockname()[1]
    clients = []
    for i in range(3):  # more than the other worker's 0 + 1: each waits DEFER_S, then is taken anyway
        _, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"hello %d\n" % i)
        clients.append(w)
    async with asyncio.timeout(10):
        while len(seen) < 3:
            await asyncio.sleep(0.01)
    assert sorted(seen) == [b"hello 0\n", b"hello 1\n", b"hello 2\n"]
    assert other.least_other() == 3, "its open connections are in the shared counts"
    release.set()
    server.close()
    for w in clients:
        w.close()
    async with asyncio.timeout(10):
        while other.least_other() != 0:
            await asyncio.sleep(0.01)
