"""The admin listener and the readiness probe, on a stand-in gateway."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from douane.audit.writer import WriterHealth
from douane.meter.limits import Limits
from douane.meter.state import MemoryState, RedisState, Take
from douane.ops.admin import AdminPortError, AdminServer, admin_routes
from douane.ops.metrics import Metrics
from douane.ops.probe import GatewayProbe
from douane.policy.model import Policy
from douane.relay.plan import Breakers


def health(status: str = "ok", reason: str | None = None, pending: int = 0) -> WriterHealth:
    return WriterHealth(status=status, reason=reason, pending=pending, written=5, folded=0, quarantined=0,
                        spilled=0, lost=0, failures=0, degraded_for=None if status == "ok" else 12.5)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def gateway(policy: Policy | None = None, state: Any = None, writer: WriterHealth | None = None) -> Any:
    policy = policy or Policy()
    clock = Clock()
    return SimpleNamespace(
        policy=policy, draining=False, inflight={"a", "b"},
        writer=SimpleNamespace(health=lambda: writer or health()),
        limits=Limits(policy, state or MemoryState()),
        relay=SimpleNamespace(breakers=Breakers(failures=2, cooldown=10, clock=clock)), clock=clock)


async def get(server: AdminServer, path: str, method: str = "GET") -> httpx.Response:
    async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
        return await client.request(method, f"http://127.0.0.1:{server.port}{path}")


def serve(gw: Any, metrics: Metrics | None = None) -> tuple[AdminServer, GatewayProbe]:
    probe = GatewayProbe(gw)
    if metrics is not None:
        probe.install(metrics)
    return AdminServer(admin_routes(metrics, probe)), probe


def test_ready_when_every_check_passes_and_503_naming_the_one_that_fails() -> None:
    async def main() -> None:
        gw = gateway()
        server, _ = serve(gw)
        await server.start()
        try:
            r = await get(server, "/readyz")
            assert r.status_code == 200 and r.json()["ready"] is True
            gw.writer = SimpleNamespace(health=lambda: health("degraded", "disk full: /srv/audit"))
            r = await get(server, "/readyz")
            assert r.status_code == 503
            assert r.json()["checks"]["audit_writer"] == {"ok": False, "detail": "disk full: /srv/audit"}
            assert (await get(server, "/healthz")).status_code == 200, "alive even when not ready"
            gw.writer = SimpleNamespace(health=health)
            gw.draining = True
            assert (await get(server, "/readyz")).status_code == 503
        finally:
            await server.close()

    asyncio.run(main())


def test_unreachable_redis_is_not_ready() -> None:
    async def main() -> None:
        policy = Policy.model_validate({"state": {"backend": "redis", "url": "redis://:s3cret-pw@127.0.0.1:1/0"}})
        gw = gateway(policy, RedisState(policy.state.url))
        server, probe = serve(gw)
        await server.start()
        try:
            r = await get(server, "/readyz")
            assert r.status_code == 503
            assert r.json()["checks"]["redis"]["ok"] is False
            assert "redis://:***@127.0.0.1:1/0" in r.json()["checks"]["redis"]["detail"]
            assert "s3cret-pw" not in r.text, "the probe is unauthenticated: no password in it"
            assert probe.redis_up is False
        finally:
            await server.close()

    asyncio.run(main())


def test_metrics_serve_the_gauges_read_at_scrape_time() -> None:
    async def main() -> None:
        policy = Policy.model_validate({"teams": {"support": {"budget_usd_per_day": 2.0}}})
        state = MemoryState()
        gw = gateway(policy, state, writer=health(pending=4))
        gw.relay.breakers.failure("http://down:1")
        gw.relay.breakers.failure("http://down:1")  # two failures open it
        gw.relay.breakers.failure("http://flaky:1")
        key = gw.limits.budget_counters()[0][1]
        await state.reserve([Take(key, 500_000, 2_000_000, 60)])  # $0.50 of $2
        server, _ = serve(gw, Metrics())
        await server.start()
        try:
            text = (await get(server, "/metrics")).text
        finally:
            await server.close()
        assert "douane_audit_queue_depth 4.0" in text
        assert 'douane_budget_used_ratio{rule="teams.support.budget_usd_per_day"} 0.25' in text
        assert 'douane_breaker_open{upstream="http://down:1"} 1.0' in text
        assert 'douane_breaker_open{upstream="http://flaky:1"} 0.0' in text
        assert 'douane_breaker_failures{upstream="http://flaky:1"} 1.0' in text
        assert "douane_calls_in_flight 2.0" in text
        assert "douane_redis_up" not in text.replace("# HELP douane_redis_up", "").replace(
            "# TYPE douane_redis_up", "")

    asyncio.run(main())


def test_paths_methods_and_keep_alive() -> None:
    async def main() -> None:
        server, _ = serve(gateway())
        await server.start()
        try:
            async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
                base = f"http://127.0.0.1:{server.port}"
                for _ in range(3):  # the same connection serves request after request
                    assert (await client.get(f"{base}/healthz")).status_code == 200
                missing = await client.get(f"{base}/metrics")
                assert missing.status_code == 404, "no metrics were asked for"
                assert "/readyz" in missing.json()["paths"]
                assert (await client.post(f"{base}/healthz", content=b"x" * 100)).status_code == 405
                assert (await client.head(f"{base}/healthz")).status_code == 200
        finally:
            await server.close()

    asyncio.run(main())


def test_garbage_and_oversized_heads_close_the_connection_without_harm() -> None:
    async def main() -> None:
        server, _ = serve(gateway())
        await server.start()
        try:
            for junk in (b"NOT HTTP AT ALL\r\n\r\n", b"GET /healthz HTTP/1.1\r\nx: " + b"a" * 40_000 + b"\r\n\r\n"):
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                writer.write(junk)
                await writer.drain()
                await asyncio.wait_for(reader.read(), 5)  # closed (with or without an error answer)
                writer.close()
            assert (await get(server, "/healthz")).status_code == 200, "still serving"
        finally:
            await server.close()

    asyncio.run(main())


def test_a_taken_port_is_an_admin_port_error() -> None:
    async def main() -> None:
        first = AdminServer({})
        await first.start()
        try:
            with pytest.raises(AdminPortError, match=f"127.0.0.1:{first.port}"):
                await AdminServer({}, port=first.port).start()
        finally:
            await first.close()

    asyncio.run(main())


def test_anomaly_routes_list_and_clear() -> None:
    from douane.ops.anomaly import AnomalyGuard, Restriction
    from douane.policy.model import AnomalyPolicy

    async def main() -> None:
        guard = AnomalyGuard(AnomalyPolicy())
        guard.restrictions[("client", "bot")] = Restriction("block", "a spike of calls", 10.0)
        server = AdminServer(admin_routes(None, GatewayProbe(gateway()), guard))
        await server.start()
        try:
            listed = (await get(server, "/anomaly")).json()["restrictions"]
            assert listed == [{"scope": "client", "name": "bot", "kind": "block", "reason": "a spike of calls",
                               "since": 10.0}]
            assert (await get(server, "/anomaly/clear?client=bot")).status_code == 405, "GET does not clear"
            assert (await get(server, "/anomaly/clear", "POST")).status_code == 400
            assert (await get(server, "/anomaly/clear?client=bot", "POST")).json() == {
                "cleared": True, "scope": "client", "name": "bot"}
            assert (await get(server, "/anomaly/clear?client=bot", "POST")).status_code == 404
            assert (await get(server, "/anomaly")).json()["restrictions"] == []
        finally:
            await server.close()

    asyncio.run(main())
