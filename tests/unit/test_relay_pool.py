"""upstream.pool without mitmproxy: a pooled plan (the direct path's own request through the relay),
the warm-ups, the relay's TLS trust, the headers it forwards, the origins it keeps warm."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from douane.policy.model import Policy
from douane.policy.schema import policy_schema
from douane.providers import ProviderSpec
from douane.relay import Attempt, Breakers, Dispatch, Plan, Relay
from douane.relay.pool import Warmer, upstream_tls
from douane.routing import outgoing_headers, pool_origins
from tests.mock_provider import make_cert
from tests.unit.test_relay import Handler, post, relay_with  # noqa: F401  (relay_with: a fixture)

DIRECT = Attempt("openai", "openai", "gpt-4o-mini", "https://api.openai.com/v1/chat/completions",
                 {"authorization": "Bearer sk-client", "content-type": "application/json"}, b'{"model":"gpt-4o-mini"}')


def pooled(call_id: str = "p1") -> Plan:
    return Plan(call_id, "openai", "gpt-4o-mini", False, [DIRECT], [], first_byte_timeout=None, pooled=True)


def test_a_pooled_plan_is_never_skipped_nor_counted_by_the_breakers() -> None:
    breakers = Breakers(failures=1, cooldown=60)
    breakers.failure(DIRECT.base)  # the circuit is open: a fallback plan would skip this target
    plan = pooled()
    t = Dispatch(plan, breakers).next()
    assert t is not None and t.attempt is DIRECT, "the direct path has no breaker: neither has the pool"
    breakers.success(DIRECT.base)
    for _ in range(3):
        d = Dispatch(pooled(), breakers)
        t = d.next()
        assert t is not None and d.no_answer(t, False, "ConnectError: refused") == 502
    assert breakers.states() == {}, "pooled failures do not open a circuit for fallback plans"


def test_a_pooled_failure_is_worded_as_the_direct_paths() -> None:
    plan = pooled()
    d = Dispatch(plan, Breakers())
    t = d.next()
    assert t is not None and d.no_answer(t, False, "ConnectError: [Errno 111] refused") == 502
    assert d.failure_message() == ("douane could not get an answer from openai at https://api.openai.com: "
                                   "ConnectError: [Errno 111] refused")


async def test_the_relay_sends_a_pooled_request_as_it_is_and_passes_the_answer_through(
        relay_with: Callable[[Handler], Relay]) -> None:  # noqa: F811
    seen: list[httpx.Request] = []

    def upstream(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(429, json={"error": {"message": "slow down", "type": "rate_limit"}},
                              headers={"retry-after": "3"})

    plan = pooled()
    r = await post(relay_with(upstream), plan)
    assert r.status_code == 429 and r.json() == {"error": {"message": "slow down", "type": "rate_limit"}}
    assert r.headers["retry-after"] == "3", "the upstream's own answer, headers and all"
    assert str(seen[0].url) == DIRECT.url and seen[0].content == DIRECT.body
    assert seen[0].headers["authorization"] == "Bearer sk-client" and plan.served is DIRECT


async def test_an_unreachable_pooled_upstream_is_a_502_in_the_clients_shape(
        relay_with: Callable[[Handler], Relay]) -> None:  # noqa: F811
    def upstream(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused")

    plan = Plan("p2", "anthropic", "claude-x", False, [DIRECT], [], first_byte_timeout=None, pooled=True)
    r = await post(relay_with(upstream), plan)
    assert r.status_code == 502 and r.json()["type"] == "error"
    assert r.json()["error"]["message"].startswith("douane could not get an answer from openai at https://api.openai.com")
    assert plan.served is None


# -- warming ------------------------------------------------------------------------------------------

def recording_transport(statuses: dict[str, int | Exception], seen: list[httpx.Request]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        outcome = statuses[f"{request.url.scheme}://{request.url.netloc.decode()}"]
        if isinstance(outcome, Exception):
            raise outcome
        return httpx.Response(outcome)

    return httpx.MockTransport(handle)


async def test_warming_opens_each_origin_once_with_a_request_no_one_can_be_billed_for(
        caplog: pytest.LogCaptureFixture) -> None:
    seen: list[httpx.Request] = []
    down = httpx.ConnectError("refused")
    statuses: dict[str, int | Exception] = {"https://api.openai.com": 404, "https://api.anthropic.com": 405,
                                            "http://127.0.0.1:9": down}
    async with recording_transport(statuses, seen) as transport:
        warmer = Warmer(transport)
        with caplog.at_level(logging.WARNING, "douane.relay.pool"):
            await warmer.warm(["https://api.openai.com", "https://api.anthropic.com", "https://api.openai.com",
                               "http://127.0.0.1:9"])
            await warmer.warm(["http://127.0.0.1:9"])
    assert sorted(str(r.url) for r in seen) == ["http://127.0.0.1:9/", "http://127.0.0.1:9/",
                                               "https://api.anthropic.com/", "https://api.openai.com/"]
    assert {r.method for r in seen} == {"HEAD"}
    credentials = {"authorization", "x-api-key", "x-goog-api-key", "api-key", "cookie"}
    assert all(not credentials & set(r.headers.keys()) for r in seen), "a warm-up names no account"
    assert warmer.warmed == {"https://api.openai.com": 404, "https://api.anthropic.com": 405,
                             "http://127.0.0.1:9": None}
    assert len([r for r in caplog.records if "127.0.0.1:9" in r.getMessage()]) == 1, "said once, not every round"


async def test_keeping_warm_reads_the_origins_each_round_and_stops() -> None:
    seen: list[httpx.Request] = []
    rounds: list[float] = []
    origins = [["https://a.test"], [], ["https://b.test"]]
    next_round = asyncio.Event()

    async def sleep(seconds: float) -> None:
        rounds.append(seconds)
        if len(rounds) >= len(origins):
            next_round.set()
            await asyncio.Event().wait()  # the last round: wait until stopped

    async with recording_transport({"https://a.test": 404, "https://b.test": 404}, seen) as transport:
        warmer = Warmer(transport, sleep)
        warmer.keep_warm(lambda: origins[len(rounds)], every=30)
        await asyncio.wait_for(next_round.wait(), 5)
        await warmer.stop()
    assert [str(r.url) for r in seen] == ["https://a.test/", "https://b.test/"] and rounds == [30, 30, 30]


# -- what the relay trusts and forwards ---------------------------------------------------------------

def test_the_relay_trusts_what_mitmproxy_is_told_to(tmp_path: Path) -> None:
    default = upstream_tls(False, None, None)
    assert default.verify_mode == ssl.CERT_REQUIRED and default.check_hostname
    assert default.cert_store_stats()["x509_ca"] > 50, "certifi's store, as mitmproxy's"
    insecure = upstream_tls(True, None, None)
    assert insecure.verify_mode == ssl.CERT_NONE and not insecure.check_hostname
    cert, _ = make_cert(str(tmp_path))
    only = upstream_tls(False, cert, None)
    assert only.verify_mode == ssl.CERT_REQUIRED and only.check_hostname
    assert only.cert_store_stats()["x509_ca"] == 1, "the given CA replaces the default store, as in mitmproxy"


def test_forwarded_headers_leave_the_hop_and_the_proxy_behind() -> None:
    headers = {"Authorization": "Bearer sk-client", "Host": "api.openai.com", "Connection": "keep-alive, x-hop",
               "x-hop": "1", "Proxy-Authorization": "Basic Ym90OnNlY3JldA==", "Transfer-Encoding": "chunked",
               "content-length": "12", "content-type": "application/json", "x-stainless-lang": "python"}
    assert outgoing_headers(headers, drop=("content-length",)) == {
        "Authorization": "Bearer sk-client", "content-type": "application/json", "x-stainless-lang": "python"}


def test_the_origins_kept_warm_are_every_upstream_the_policy_can_send_to() -> None:
    policy = Policy.model_validate({"version": 1, "routes": [
        {"when": {"team": "x"}, "set_upstream": "https://eu.example.com:8443/v1"},
        {"when": {"team": "y"}, "set_model": "m"}]})
    specs = [ProviderSpec("openai", "openai", ("api.openai.com",)),
             ProviderSpec("azure", "openai", ("corp.openai.azure.com",), upstream="http://127.0.0.1:9000/prefix"),
             ProviderSpec("mine", "openai", ("api.openai.com",)),
             ProviderSpec("nowhere", "openai", ())]
    assert pool_origins(policy, specs) == ["https://api.openai.com", "http://127.0.0.1:9000", "https://eu.example.com:8443"]


def test_the_pool_is_one_policy_key_off_by_default_in_the_model_and_its_schema() -> None:
    assert Policy().upstream.pool is False
    assert Policy.model_validate({"version": 1, "upstream": {"pool": True}}).upstream.pool is True
    with pytest.raises(ValidationError, match="warm"):
        Policy.model_validate({"version": 1, "upstream": {"pool": True, "warm": 3}})
    upstream = policy_schema()["$defs"]["UpstreamPolicy"]
    assert upstream["properties"]["pool"]["type"] == "boolean" and upstream["additionalProperties"] is False


async def test_a_plain_answer_is_passed_on_whole_with_its_length(
        relay_with: Callable[[Handler], Relay]) -> None:  # noqa: F811
    reply = b'{"id": "chatcmpl-1", "choices": []}'

    def upstream(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=reply, headers={"content-type": "application/json", "x-request-id": "r1"})

    r = await post(relay_with(upstream), pooled("p3"))
    assert r.content == reply and r.headers["content-length"] == str(len(reply))
    assert "transfer-encoding" not in r.headers and r.headers["x-request-id"] == "r1"
