"""Identity, access, central keys, rate limits, budgets and cost, through the real proxy."""

from __future__ import annotations

import asyncio
import hashlib
import ssl

import anthropic
import httpx
import openai
import pytest

from tests.e2e.conftest import Douane, free_port, routed_policy
from tests.e2e.test_sdks import client_env, only_row

CHAT = "https://api.openai.com/v1/chat/completions"
PASSWORD = "s3cret-proxy-pass"


def digest(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


def governed(mock: str, **extra: object) -> dict:
    policy = routed_policy(mock, **extra)
    policy.setdefault("clients", [{"name": "support-bot", "team": "support", "key_sha256": digest(PASSWORD)},
                                  {"name": "batch-job", "team": "research", "key_sha256": digest("other-pass")}])
    policy.setdefault("teams", {"support": {"models": ["gpt-4o-mini", "claude-*"]},
                                "research": {"models": ["*"], "providers": ["anthropic"]}})
    return policy


def chat(text: str = "hello", model: str = "gpt-4o-mini", **extra: object) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def test_proxy_credentials_are_required(make_douane, mock: str, received: list) -> None:
    d = make_douane(governed(mock))
    for creds in ("", "support-bot:wrong", "nobody:" + PASSWORD):
        with d.http(creds) as http, pytest.raises(httpx.ProxyError, match="407"):
            http.post(CHAT, json=chat())
    # the 407 comes before any TLS interception, with a challenge
    with socket_connect(d.port) as s:
        s.sendall(b"CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n\r\n")
        head = s.recv(4096).decode()
        while '"}' not in head.split("\r\n\r\n", 1)[-1][-4:]:  # the body may come in a second packet
            more = s.recv(4096).decode()
            if not more:
                break
            head += more
    assert head.startswith("HTTP/1.1 407") and 'Proxy-Authenticate: Basic realm="douane"' in head
    assert '"code": "proxy_auth_required"' in head, "the provider's error shape"
    assert received == []
    with d.http(f"support-bot:{PASSWORD}") as http:
        r = http.post(CHAT, json=chat())
    assert r.status_code == 200
    row = d.rows(expect=1)[0]
    assert (row["client"], row["team"]) == ("support-bot", "support")


class socket_connect:
    def __init__(self, port: int):
        import socket

        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)

    def __enter__(self):  # type: ignore[no-untyped-def]
        return self.sock

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def test_model_and_provider_allow_lists(make_douane, mock: str, received: list) -> None:
    d = make_douane(governed(mock))
    with d.http(f"support-bot:{PASSWORD}") as http:
        assert http.post(CHAT, json=chat(model="gpt-4o-mini")).status_code == 200
        refused = http.post(CHAT, json=chat(model="gpt-4o"))
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "teams.support.models"
    assert "may not use model gpt-4o" in refused.json()["error"]["message"]
    with d.http("batch-job:other-pass") as http:
        r = http.post(CHAT, json=chat(model="gpt-4o-mini"))
        ok = http.post("https://api.anthropic.com/v1/messages",
                       json={"model": "claude-haiku-4-5", "max_tokens": 5,
                             "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 403 and r.json()["error"]["code"] == "teams.research.providers"
    assert ok.status_code == 200
    assert len(received) == 2
    rows = d.rows(expect=4)
    assert [r["decision"] for r in rows] == ["allowed", "blocked", "blocked", "allowed"]


def test_central_keys_replace_client_keys(make_douane, mock: str, received: list, monkeypatch) -> None:
    policy = governed(mock)
    policy["providers"]["openai"]["api_key_env"] = "DOUANE_TEST_OPENAI_KEY"
    policy["providers"]["anthropic"]["api_key_env"] = "DOUANE_TEST_ANTHROPIC_KEY"
    monkeypatch.setenv("DOUANE_TEST_OPENAI_KEY", "sk-central-openai-999")
    monkeypatch.setenv("DOUANE_TEST_ANTHROPIC_KEY", "sk-ant-central-888")
    d = make_douane(policy)
    with client_env(d):
        import os

        os.environ["HTTPS_PROXY"] = os.environ["https_proxy"] = f"http://support-bot:{PASSWORD}@127.0.0.1:{d.port}"
        openai.OpenAI(api_key="sk-client-held-111").chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        anthropic.Anthropic(api_key="sk-ant-client-held-222").messages.create(
            model="claude-haiku-4-5", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    sent = [{k.lower(): v for k, v in r["headers"].items()} for r in received]
    assert sent[0]["authorization"] == "Bearer sk-central-openai-999"
    assert sent[1]["x-api-key"] == "sk-ant-central-888"
    assert "client-held" not in repr(received)
    d.rows(expect=2)
    d.stop()
    secrets = [b"client-held", b"central-openai", b"central-888", PASSWORD.encode()]
    files = [d.log_path, *(d.tmp / "audit.duckdb.segments").glob("*"), d.db]
    for f in files:
        data = f.read_bytes()
        assert not [s for s in secrets if s in data], f"a key or password leaked into {f}"


def test_missing_central_key_refuses_to_start(make_douane, mock: str) -> None:
    policy = routed_policy(mock)
    policy["providers"]["openai"]["api_key_env"] = "DOUANE_TEST_UNSET_KEY"
    d = make_douane(policy, start=False)
    with pytest.raises(RuntimeError, match="exited 1"):
        d.start()
    assert "DOUANE_TEST_UNSET_KEY is empty or not set" in d.log()


def test_rate_limit_answers_429_with_retry_after(make_douane, mock: str) -> None:
    policy = governed(mock)
    policy["teams"]["support"]["requests_per_minute"] = 2
    d = make_douane(policy)
    with client_env(d):
        import os

        os.environ["HTTPS_PROXY"] = os.environ["https_proxy"] = f"http://support-bot:{PASSWORD}@127.0.0.1:{d.port}"
        client = openai.OpenAI(api_key="sk-x", max_retries=0)
        for _ in range(2):
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(openai.RateLimitError) as e:
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert 1 <= int(e.value.response.headers["retry-after"]) <= 60
    assert "teams.support.requests_per_minute" in e.value.message
    row = d.rows(expect=3)[-1]
    assert row["status"] == 429 and row["reason"] == "teams.support.requests_per_minute"


def test_tokens_per_minute_settle_from_usage(make_douane, mock: str) -> None:
    policy = governed(mock)
    policy["clients"][0]["tokens_per_minute"] = 60  # the mock reports 11 input + a few output tokens
    d = make_douane(policy)
    statuses = []
    with d.http(f"support-bot:{PASSWORD}") as http:
        for _ in range(6):
            statuses.append(http.post(CHAT, json=chat("hi")).status_code)
    # each call settles at ~14 tokens, so four fit in 60 and the fifth does not
    assert statuses[:4] == [200] * 4 and statuses[-1] == 429


PRICED = {"mock-slow-*": {"input_per_mtok": 1000, "output_per_mtok": 10000}}
PROMPT = "please summarise the attached ticket for the on-call engineer " * 4  # ~260 chars: estimate > usage


def budget_policy(mock: str, **state: object) -> dict:
    policy = governed(mock, prices=PRICED)
    policy["teams"]["support"] = {"models": ["*"], "budget_usd_per_day": 1.2}
    if state:
        policy["state"] = state
    return policy


async def burst(proxies: list[str], bundle: str, n: int) -> list[httpx.Response]:
    ctx = ssl.create_default_context(cafile=bundle)
    clients = [httpx.AsyncClient(proxy=p, verify=ctx, timeout=30, trust_env=False) for p in proxies]
    try:
        return await asyncio.gather(*(clients[i % len(clients)].post(
            CHAT, json=chat(PROMPT, model="mock-slow-1", max_tokens=20)) for i in range(n)))
    finally:
        for c in clients:
            await c.aclose()


def assert_budget_held(responses: list[httpx.Response], rows: list[dict], budget: float) -> None:
    ok = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    assert len(ok) + len(refused) == len(responses)
    # worst case per call: ~69 input tokens at $1000/M + 20 output at $10000/M = ~$0.27: four fit in $1.2
    assert 3 <= len(ok) <= 5, [r.status_code for r in responses]
    assert all(r.json()["error"]["code"] == "teams.support.budget_usd_per_day" for r in refused)
    spent = sum(r["cost_usd"] for r in rows if r["status"] == 200)
    assert 0 < spent <= budget


def test_concurrent_calls_never_overspend_one_instance(make_douane, mock: str) -> None:
    d = make_douane(budget_policy(mock))
    responses = asyncio.run(burst([f"http://support-bot:{PASSWORD}@127.0.0.1:{d.port}"], d.bundle, 24))
    assert_budget_held(responses, d.rows(expect=24), 1.2)


def test_concurrent_calls_never_overspend_across_instances(make_douane, mock: str, redis_url: str) -> None:
    import redis

    redis.Redis.from_url(redis_url).flushall()
    a = make_douane(budget_policy(mock, backend="redis", url=redis_url))
    b = make_douane(budget_policy(mock, backend="redis", url=redis_url))
    proxies = [f"http://support-bot:{PASSWORD}@127.0.0.1:{d.port}" for d in (a, b)]
    responses = asyncio.run(burst(proxies, a.bundle, 24))
    rows = a.rows(expect=12) + b.rows(expect=12)
    assert_budget_held(responses, rows, 1.2)


def test_unreachable_redis_follows_fail_policy(make_douane, mock: str) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    closed = make_douane(budget_policy(mock, backend="redis", url=dead))
    with closed.http(f"support-bot:{PASSWORD}") as http:
        r = http.post(CHAT, json=chat(model="mock-slow-1"))
    assert r.status_code == 503 and r.json()["error"]["code"] == "fail.closed"
    assert "unreachable" in closed.log()
    policy = budget_policy(mock, backend="redis", url=dead)
    policy["fail"] = "open"
    opened = make_douane(policy)
    with opened.http(f"support-bot:{PASSWORD}") as http:
        assert http.post(CHAT, json=chat(model="mock-slow-1")).status_code == 200
    assert "fail.open" in opened.rows(expect=1)[0]["reason"]


def test_cost_is_priced_or_null(douane: Douane) -> None:
    with douane.http() as http:
        priced = http.post(CHAT, json=chat(model="gpt-4o-mini"))
        unknown = http.post(CHAT, json=chat(model="mock-unpriced-model"))
    p = only_row(douane, priced.headers["x-douane-request-id"])
    u = only_row(douane, unknown.headers["x-douane-request-id"])
    assert p["cost_usd"] > 0 and p["price_source"].startswith("genai-prices")
    assert u["cost_usd"] is None and u["price_source"] is None
    every = douane.rows("SELECT count(*) AS n FROM requests WHERE model LIKE 'gpt-4o-mini%' AND status = 200 "
                        "AND (cost_usd IS NULL OR cost_usd <= 0)")
    assert every[0]["n"] == 0


def test_shadow_ai_is_recorded_or_blocked(make_douane, mock: str) -> None:
    d = make_douane(shadow_ai={"action": "block"})
    with d.http() as http, pytest.raises(httpx.ProxyError, match="403"):
        http.post("https://api.mistral.ai/v1/chat/completions", json=chat())
    row = d.rows(expect=1)[0]
    assert (row["provider"], row["host"], row["decision"], row["reason"]) == \
        ("shadow", "api.mistral.ai", "blocked", "shadow_ai.block")
