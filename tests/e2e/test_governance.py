"""Identity, access, central keys, rate limits, budgets and cost, through the real proxy."""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
import redis
from google import genai

from tests.e2e.conftest import Douane, ProxyClock, body_of, free_port, routed_policy
from tests.e2e.test_sdks import client_env, only_row
from tests.redis_server import redis_server

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


@contextmanager
def as_client(d: Douane, credentials: str = f"support-bot:{PASSWORD}") -> Iterator[None]:
    """The SDKs' environment for a workload that names itself in its proxy URL."""
    with client_env(d):
        os.environ["HTTPS_PROXY"] = os.environ["https_proxy"] = f"http://{credentials}@127.0.0.1:{d.port}"
        yield


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


def test_central_keys_replace_client_keys(make_douane, mock: str, received: list, monkeypatch,
                                         tmp_path: Path) -> None:
    """Every place a client may put its key (Authorization, x-api-key, x-goog-api-key, `key=`, Azure's
    api-key) is emptied, and the provider's central key, from the environment or a file, goes out."""
    policy = governed(mock)
    policy["providers"]["openai"]["api_key_env"] = "DOUANE_TEST_OPENAI_KEY"
    policy["providers"]["anthropic"]["api_key_env"] = "DOUANE_TEST_ANTHROPIC_KEY"
    key_file = tmp_path / "gemini-key"
    key_file.write_text("AIza-central-gemini-777\n")  # as secrets are mounted: a trailing newline
    policy["providers"]["gemini"]["api_key_file"] = str(key_file)
    policy["providers"]["azure"] = {"format": "openai", "hosts": ["myres.openai.azure.com"], "upstream": mock,
                                    "api_key_env": "DOUANE_TEST_AZURE_KEY"}
    policy["teams"]["support"]["models"].append("gemini-*")
    monkeypatch.setenv("DOUANE_TEST_OPENAI_KEY", "sk-central-openai-999")
    monkeypatch.setenv("DOUANE_TEST_ANTHROPIC_KEY", "sk-ant-central-888")
    monkeypatch.setenv("DOUANE_TEST_AZURE_KEY", "azure-central-666")
    d = make_douane(policy)
    with as_client(d):
        openai.OpenAI(api_key="sk-client-held-111").chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        anthropic.Anthropic(api_key="sk-ant-client-held-222").messages.create(
            model="claude-haiku-4-5", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
        gemini = genai.Client(api_key="AIza-client-held-333")  # kept: the client closes when collected
        gemini.models.generate_content(model="gemini-2.0-flash", contents="hi")
        openai.AzureOpenAI(api_key="azure-client-held-444", api_version="2024-10-21",
                           azure_endpoint="https://myres.openai.azure.com").chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    with d.http(f"support-bot:{PASSWORD}") as http:  # Gemini's key may also travel as a query parameter
        r = http.post("https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:generateContent"
                      "?alt=json&key=AIza-client-held-555", json={"contents": [{"parts": [{"text": "hi"}]}]})
    assert r.status_code == 200
    sent = [{k.lower(): v for k, v in e["headers"].items()} for e in received]
    assert len(sent) == 5
    assert sent[0]["authorization"] == "Bearer sk-central-openai-999"
    assert sent[1]["x-api-key"] == "sk-ant-central-888"
    assert sent[2]["x-goog-api-key"] == "AIza-central-gemini-777"
    assert received[3]["path"].startswith("/openai/deployments/gpt-4o-mini/chat/completions?api-version=")
    assert sent[3]["api-key"] == "azure-central-666" and "authorization" not in sent[3], \
        "Azure's API keys go in api-key (a Bearer token there must be an Entra ID token)"
    assert sent[4]["x-goog-api-key"] == "AIza-central-gemini-777"
    assert received[4]["path"] == "/v1beta/models/gemini-2.0-flash:generateContent?alt=json", \
        "the client's key= parameter is dropped, the other parameters kept"
    for entry in received:  # one key per call, and never the client's
        keys = [v for k, v in entry["headers"].items() if k.lower() in KEY_HEADERS]
        assert len(keys) == 1, entry["headers"]
    assert "client-held" not in repr(received)
    d.rows(expect=5)
    d.stop()
    secrets = [b"client-held", b"central-openai", b"central-888", b"central-gemini", b"azure-central",
               PASSWORD.encode()]
    files = [d.log_path, *(d.tmp / "audit.duckdb.segments").glob("*"), d.db]
    for f in files:
        data = f.read_bytes()
        assert not [s for s in secrets if s in data], f"a key or password leaked into {f}"


KEY_HEADERS = ("authorization", "x-api-key", "x-goog-api-key", "api-key")


def test_an_unreadable_key_file_refuses_to_start(make_douane, mock: str, tmp_path: Path) -> None:
    policy = routed_policy(mock)
    policy["providers"]["gemini"]["api_key_file"] = str(tmp_path / "no-such-key")
    d = make_douane(policy, start=False)
    with pytest.raises(RuntimeError, match="exited 1"):
        d.start()
    assert "providers.gemini.api_key_file: cannot read" in d.log() and "no-such-key" in d.log()


def test_missing_central_key_refuses_to_start(make_douane, mock: str) -> None:
    policy = routed_policy(mock)
    policy["providers"]["openai"]["api_key_env"] = "DOUANE_TEST_UNSET_KEY"
    d = make_douane(policy, start=False)
    with pytest.raises(RuntimeError, match="exited 1"):
        d.start()
    assert "DOUANE_TEST_UNSET_KEY is empty or not set" in d.log()


def test_rate_limit_answers_429_with_retry_after(make_douane, mock: str, tmp_path: Path) -> None:
    """Requests per minute in UTC minute windows, on the proxy's test clock: 10 s into the minute,
    the third call waits the 50 s left; the next minute is a new window."""
    clock = ProxyClock(tmp_path, "2030-01-01T00:00:10+00:00")
    policy = governed(mock)
    policy["teams"]["support"]["requests_per_minute"] = 2
    d = make_douane(policy, env=clock.env)
    with as_client(d):
        client = openai.OpenAI(api_key="sk-x", max_retries=0)
        for _ in range(2):
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(openai.RateLimitError) as e:
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        clock.set("2030-01-01T00:00:59+00:00")
        with pytest.raises(openai.RateLimitError) as still:
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        clock.set("2030-01-01T00:01:00+00:00")
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert e.value.response.headers["retry-after"] == "50"
    assert still.value.response.headers["retry-after"] == "1"
    assert "teams.support.requests_per_minute" in e.value.message
    rows = d.rows(expect=5)
    assert [r["status"] for r in rows] == [200, 200, 429, 429, 200]
    assert rows[2]["reason"] == "teams.support.requests_per_minute" and rows[2]["decision"] == "blocked"


def test_tokens_per_minute_settle_from_usage(make_douane, mock: str, tmp_path: Path) -> None:
    """Each call reserves its estimate (README: characters / 4 + 4 per message: "hi" is 5 tokens)
    and settles at the provider's usage (the mock reports 11 in + 2 out = 13). So five calls fit in
    60 (the fifth reserves 5 on 52), the sixth (5 on 65) does not."""
    clock = ProxyClock(tmp_path)
    policy = governed(mock)
    policy["clients"][0]["tokens_per_minute"] = 60
    d = make_douane(policy, env=clock.env)
    statuses = []
    with d.http(f"support-bot:{PASSWORD}") as http:
        for _ in range(6):
            statuses.append(http.post(CHAT, json=chat("hi")).status_code)
        refused = d.rows(expect=6)[-1]
        clock.advance(60)
        statuses.append(http.post(CHAT, json=chat("hi")).status_code)
    assert statuses == [200] * 5 + [429, 200]
    assert refused["reason"] == "clients[0].tokens_per_minute"
    assert [r["input_tokens"] + r["output_tokens"] for r in d.rows(expect=7) if r["status"] == 200] == [13] * 6


PRICED = {"mock-slow-*": {"input_per_mtok": 1000, "output_per_mtok": 10000},
          "mock-priced-*": {"input_per_mtok": 1000, "output_per_mtok": 10000}}
PROMPT = "please summarise the attached ticket for the on-call engineer " * 4  # ~250 chars: estimate > usage
MAX_TOKENS = 20
# README: a call reserves its worst case, the input estimate (characters / 4, plus 4 per message) and
# max_tokens of output, and settles at its usage: the mock reports 11 input tokens, and answers as
# many words (output tokens) as max_tokens allows.
WORST_USD = (math.ceil(len(PROMPT) / 4) + 4) * 1000e-6 + MAX_TOKENS * 10000e-6
SETTLED_USD = 11 * 1000e-6 + MAX_TOKENS * 10000e-6


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
            CHAT, json=chat(PROMPT, model="mock-slow-1", max_tokens=MAX_TOKENS)) for i in range(n)))
    finally:
        for c in clients:
            await c.aclose()


def assert_budget_held(responses: list[httpx.Response], rows: list[dict], budget: float) -> None:
    ok = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    assert len(ok) + len(refused) == len(responses) == len(rows)
    # however the burst interleaves: as many as fit at their worst case all pass, and never more than
    # fit at their real cost
    assert math.floor(budget / WORST_USD) <= len(ok) <= math.floor(budget / SETTLED_USD), \
        [r.status_code for r in responses]
    assert refused, "the burst was meant to go past the budget"
    assert {r.json()["error"]["code"] for r in refused} == {"teams.support.budget_usd_per_day"}
    served = [r for r in rows if r["status"] == 200]
    assert len(served) == len(ok)
    assert [r["cost_usd"] for r in served] == pytest.approx([SETTLED_USD] * len(ok))
    assert sum(r["cost_usd"] for r in served) <= budget


def test_concurrent_calls_never_overspend_one_instance(make_douane, mock: str, tmp_path: Path) -> None:
    d = make_douane(budget_policy(mock), env=ProxyClock(tmp_path).env)
    responses = asyncio.run(burst([f"http://support-bot:{PASSWORD}@127.0.0.1:{d.port}"], d.bundle, 24))
    assert_budget_held(responses, d.rows(expect=24), 1.2)


def test_concurrent_calls_never_overspend_across_instances(make_douane, mock: str, redis_url: str,
                                                           tmp_path: Path) -> None:
    redis.Redis.from_url(redis_url).flushall()
    clock = ProxyClock(tmp_path)  # both instances on the same day
    a = make_douane(budget_policy(mock, backend="redis", url=redis_url), env=clock.env)
    b = make_douane(budget_policy(mock, backend="redis", url=redis_url), env=clock.env)
    proxies = [f"http://support-bot:{PASSWORD}@127.0.0.1:{d.port}" for d in (a, b)]
    responses = asyncio.run(burst(proxies, a.bundle, 24))
    rows = a.rows(expect=12) + b.rows(expect=12)
    assert_budget_held(responses, rows, 1.2)


def test_monthly_budget_outlives_the_day(make_douane, mock: str, tmp_path: Path) -> None:
    """budget_usd_per_month holds across days and resets with the month. Each call reserves its
    worst case ((40 / 4 + 4) input tokens + 10 output: $0.114) and costs $0.111 (11 in, 10 out):
    two fit in $0.25, a third does not, the next day either; it does on the first of the month."""
    clock = ProxyClock(tmp_path, "2030-01-30T23:59:00+00:00")
    policy = governed(mock, prices=PRICED)
    policy["teams"]["support"] = {"models": ["*"], "budget_usd_per_month": 0.25, "budget_usd_per_day": 10}
    d = make_douane(policy, env=clock.env)
    ten_words = "w " * 20

    def call() -> httpx.Response:
        with d.http(f"support-bot:{PASSWORD}") as http:
            return http.post(CHAT, json=chat(ten_words, model="mock-priced-1", max_tokens=10))

    assert [call().status_code for _ in range(2)] == [200, 200]
    assert call().status_code == 429
    clock.set("2030-01-31T00:00:30+00:00")
    next_day = call()
    assert next_day.status_code == 429
    assert next_day.json()["error"]["code"] == "teams.support.budget_usd_per_month"
    assert next_day.headers["retry-after"] == str(24 * 3600 - 30), "the month ends at midnight"
    assert "budget_usd_per_month of $0.25 would be exceeded" in next_day.json()["error"]["message"]
    clock.set("2030-02-01T00:00:00+00:00")
    assert call().status_code == 200
    rows = d.rows(expect=5)
    assert [r["status"] for r in rows] == [200, 200, 429, 429, 200]
    assert [r["cost_usd"] for r in rows if r["status"] == 200] == pytest.approx([0.111] * 3)


@pytest.mark.parametrize("fail", ["closed", "open"])
def test_a_model_without_a_price_cannot_be_held_to_a_budget(make_douane, mock: str, received: list,
                                                            fail: str) -> None:
    policy = governed(mock, fail=fail, prices=PRICED)
    policy["teams"]["support"] = {"models": ["*"], "budget_usd_per_day": 5}
    d = make_douane(policy)
    with as_client(d):
        client = openai.OpenAI(api_key="sk-x", max_retries=0)
        if fail == "closed":
            with pytest.raises(openai.PermissionDeniedError) as e:
                client.chat.completions.create(model="mock-unpriced-model",
                                               messages=[{"role": "user", "content": "hi"}])
            assert e.value.status_code == 403 and e.value.body["code"] == "budget.unpriced_model"
            assert "model mock-unpriced-model has no known price" in e.value.message
            assert "prices:" in e.value.message, "the message says what to do"
        else:
            reply = client.chat.completions.create(model="mock-unpriced-model",
                                                   messages=[{"role": "user", "content": "hi"}])
            assert reply.choices[0].message.content == "echo: hi"
        priced = client.chat.completions.create(model="mock-priced-1", max_tokens=5,
                                                messages=[{"role": "user", "content": "hi"}])
    assert priced.choices[0].message.content == "echo: hi", "a priced model goes through either way"
    rows = d.rows(expect=2)
    assert [body_of(r)["model"] for r in received] == (["mock-priced-1"] if fail == "closed"
                                                        else ["mock-unpriced-model", "mock-priced-1"])
    unpriced = rows[0]
    assert unpriced["model"] == "mock-unpriced-model" and unpriced["cost_usd"] is None
    if fail == "closed":
        assert (unpriced["status"], unpriced["decision"], unpriced["reason"]) == (403, "blocked",
                                                                                  "budget.unpriced_model")
    else:
        assert (unpriced["status"], unpriced["decision"]) == (200, "allowed")
        assert "fail.open: model mock-unpriced-model has no known price" in unpriced["reason"]


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


@pytest.mark.parametrize("how", ["oom", "readonly"])
def test_a_redis_that_refuses_writes_follows_fail_policy(make_douane, mock: str, received: list, tmp_path: Path,
                                                        how: str) -> None:
    """A Redis that answers but refuses the reservation (out of memory, a read-only replica) is a failed
    state like an unreachable one: closed answers 503 and forwards nothing, open forwards and says so."""
    with redis_server(tmp_path) as url:
        r = redis.Redis.from_url(url)
        if how == "oom":
            r.config_set("maxmemory-policy", "noeviction")
            r.config_set("maxmemory", "1")
        else:
            r.replicaof("127.0.0.1", str(free_port()))
        closed = make_douane(budget_policy(mock, backend="redis", url=url))
        opened = make_douane({**budget_policy(mock, backend="redis", url=url), "fail": "open"})
        with closed.http(f"support-bot:{PASSWORD}") as http:  # a call that fits: Redis must write
            refused = http.post(CHAT, json=chat(model="mock-priced-1", max_tokens=5))
        assert received == []
        with opened.http(f"support-bot:{PASSWORD}") as http:
            forwarded = http.post(CHAT, json=chat(model="mock-priced-1", max_tokens=5))
    error = {"oom": "OutOfMemoryError", "readonly": "ReadOnlyError"}[how]
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "fail.closed"
    assert "limits and budgets cannot be checked" in refused.json()["error"]["message"]
    row = closed.rows(expect=1)[0]
    assert (row["status"], row["decision"], row["reason"]) == (503, "blocked", "fail.closed")
    assert f"redis at {url} failed ({error}" in row["error"]
    assert forwarded.status_code == 200 and len(received) == 1
    row = opened.rows(expect=1)[0]
    assert row["decision"] == "allowed" and "fail.open: limits and budgets not checked" in row["reason"]
    assert f"redis at {url} failed ({error}" in row["error"]


def test_cost_is_priced_or_null(douane: Douane) -> None:
    """Priced at OpenAI's published gpt-4o-mini rates ($0.15 / $0.60 per million input / output
    tokens) from the usage the mock reports (11 in, 2 out); an unknown model costs NULL, never 0."""
    with douane.http() as http:
        priced = http.post(CHAT, json=chat("hello", model="gpt-4o-mini"))
        unknown = http.post(CHAT, json=chat(model="mock-unpriced-model"))
    p = only_row(douane, priced.headers["x-douane-request-id"])
    u = only_row(douane, unknown.headers["x-douane-request-id"])
    assert (p["input_tokens"], p["output_tokens"]) == (11, 2)
    assert p["cost_usd"] == pytest.approx(11 * 0.15e-6 + 2 * 0.60e-6)
    assert p["price_source"].startswith("genai-prices")
    assert u["cost_usd"] is None and u["price_source"] is None


def test_a_connect_to_a_bare_public_ip_is_refused_through_the_proxy(make_douane) -> None:
    """A provider reached by its address (its TLS then names no server either) would go out
    uninspected: the CONNECT is refused before douane opens any connection, and recorded."""
    d = make_douane()
    with d.http() as http, pytest.raises(httpx.ProxyError, match="403"):
        http.post("https://162.159.140.245/v1/chat/completions", json=chat())
    row = d.rows(expect=1)[0]
    assert (row["provider"], row["host"], row["decision"], row["reason"]) == \
        ("shadow", "162.159.140.245", "blocked", "shadow_ai.bare_ips.block")


def test_shadow_ai_is_recorded_or_blocked(make_douane, mock: str) -> None:
    d = make_douane(shadow_ai={"action": "block"})
    with d.http() as http, pytest.raises(httpx.ProxyError, match="403"):
        http.post("https://api.mistral.ai/v1/chat/completions", json=chat())
    row = d.rows(expect=1)[0]
    assert (row["provider"], row["host"], row["decision"], row["reason"]) == \
        ("shadow", "api.mistral.ai", "blocked", "shadow_ai.block")
