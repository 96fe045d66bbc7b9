import asyncio
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
import redis

from douane.call import Call
from douane.clock import FixedClock
from douane.meter.gate import Meter
from douane.meter.limits import Limits
from douane.meter.pricing import Pricer
from douane.meter.state import MemoryState, RedisState, StateUnavailable
from douane.meter.tokens import estimate_input_tokens
from douane.policy.model import Client, Policy, Price, StatePolicy, Team
from douane.providers import ADAPTERS, ProviderSpec, Usage
from douane.urls import without_password
from tests.redis_server import redis_server


def limits(**team: object) -> Limits:
    policy = Policy(teams={"t": Team(**team)},  # type: ignore[arg-type]
                    clients=[Client(name="c", team="t", key_sha256="0" * 64, requests_per_minute=3)])
    return Limits(policy, MemoryState())


def test_reservations_hold_and_say_when_to_retry() -> None:
    lim = limits(requests_per_minute=2)
    now = datetime(2026, 1, 1, 12, 0, 45, tzinfo=UTC)

    async def go() -> list:
        return [await lim.reserve("t", "c", 10, None, now) for _ in range(3)]

    results = asyncio.run(go())
    assert [r is not None for r, _ in results] == [True, True, False]
    refusal = results[2][1]
    assert refusal.rule == "teams.t.requests_per_minute" and refusal.retry_after == 15
    # a new minute is a new window
    later = datetime(2026, 1, 1, 12, 1, 1, tzinfo=UTC)
    assert asyncio.run(lim.reserve("t", "c", 10, None, later))[1] is None


def test_client_quota_applies_with_team_quota() -> None:
    lim = limits()  # the team has no limits, the client 3 rpm
    now = datetime(2026, 1, 1, tzinfo=UTC)
    outcomes = [asyncio.run(lim.reserve("t", "c", 1, None, now))[1] for _ in range(4)]
    assert outcomes[3] is not None and outcomes[3].rule == "clients[0].requests_per_minute"
    assert asyncio.run(lim.reserve("t", "someone-else", 1, None, now)) == (None, None)


def test_budget_settles_to_actual_cost() -> None:
    lim = limits(budget_usd_per_day=1.0)
    now = datetime(2026, 1, 1, 23, 0, 0, tzinfo=UTC)

    async def go() -> None:
        res, refusal = await lim.reserve("t", "c", 10, 0.6, now)
        assert refusal is None and res is not None
        _, refusal = await lim.reserve("t", "c", 10, 0.6, now)
        assert refusal is not None and refusal.retry_after == 3600
        assert "budget_usd_per_day of $1.00" in refusal.message
        await lim.settle(res, 20, 0.1)  # the call cost far less than its worst case
        res2, refusal = await lim.reserve("t", "c", 10, 0.6, now)
        assert refusal is None

    asyncio.run(go())


def test_pricing_known_unknown_and_overrides() -> None:
    p = Pricer({"my-local-*": Price(input_per_mtok=1.0, output_per_mtok=2.0)})
    known = p.cost("openai", "gpt-4o-mini", Usage(input_tokens=1_000_000, output_tokens=0))
    assert known is not None and known.usd == pytest.approx(0.15) and known.source.startswith("genai-prices")
    assert p.cost("openai", "no-such-model-xyz", Usage(input_tokens=10, output_tokens=10)) is None
    local = p.cost("openai", "my-local-7b", Usage(input_tokens=1_000_000, output_tokens=1_000_000))
    assert local is not None and local.usd == pytest.approx(3.0) and local.source == "policy prices.my-local-*"
    worst = p.worst_case("anthropic", "claude-haiku-4-5", 1000, None, 4096)
    capped = p.worst_case("anthropic", "claude-haiku-4-5", 1000, 10, 4096)
    assert worst is not None and capped is not None and worst.usd > capped.usd > 0


def test_token_estimate_counts_every_message() -> None:
    req = ADAPTERS["openai"].parse_request("chat.completions", "/", {
        "model": "m", "messages": [{"role": "system", "content": "x" * 40}, {"role": "user", "content": "y" * 400}]})
    assert estimate_input_tokens(req) == 110 + 8
    assert estimate_input_tokens(None, body_bytes=4000) == 1000


@pytest.mark.parametrize(("provider", "model"), [("openai", "gpt-4o-mini"), ("anthropic", "claude-haiku-4-5"),
                                                 ("gemini", "gemini-2.0-flash"), ("gemini", "gemini-2.5-pro")])
def test_flat_rate_shortcut_equals_genai_prices(provider: str, model: str) -> None:
    """The cached flat rate must give exactly what genai-prices computes, tiers excepted."""
    from genai_prices import Usage as PriceUsage
    from genai_prices import calc_price

    provider_ids = {"openai": "openai", "anthropic": "anthropic", "gemini": "google"}  # genai-prices' names
    p = Pricer()
    for n_in, n_out, cached in [(1000, 500, 0), (12345, 678, 1000), (250_000, 10, 0), (7, 3, 0)]:
        got = p.cost(provider, model, Usage(input_tokens=n_in, output_tokens=n_out, cached_tokens=cached))
        want = calc_price(PriceUsage(input_tokens=n_in, output_tokens=n_out, cache_read_tokens=cached or None),
                          model_ref=model, provider_id=provider_ids[provider]).total_price
        assert got is not None and got.usd == pytest.approx(float(want), rel=1e-12)


# -- Redis failures other than a lost connection follow `fail` --------------------------------------

@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


def _break_redis(url: str, how: str) -> Callable[[], None]:
    """Put a live Redis in a state where it answers, but with an error; return how to undo it."""
    r = redis.Redis.from_url(url)
    if how == "oom":  # every write: "OOM command not allowed when used memory > 'maxmemory'"
        r.config_set("maxmemory-policy", "noeviction")
        r.config_set("maxmemory", "1")
        return lambda: r.config_set("maxmemory", "0")
    if how == "readonly":  # a replica: "READONLY You can't write against a read only replica"
        r.replicaof("127.0.0.1", str(free_port()))
        return lambda: r.replicaof("NO", "ONE")
    # a counter that is not a number: the Lua script fails ("attempt to perform arithmetic on a nil value")
    r.set("douane:teams.t:rpm@203001010000", "not-a-number")
    return lambda: None


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def governed_call() -> Call:
    spec = ProviderSpec("openai", "openai", ("api.openai.com",))
    return Call(id="dou_test", started=0.0, provider=spec, host="api.openai.com", method="POST",
                path="/v1/chat/completions", endpoint="chat.completions", client="c", team="t")


@pytest.mark.parametrize("how", ["oom", "readonly", "corrupt-counter"])
@pytest.mark.parametrize("fail", ["closed", "open"])
async def test_a_redis_that_answers_with_an_error_follows_fail(redis_url: str, how: str, fail: str) -> None:
    """OOM, READONLY or a script error from a reachable Redis is as much a failure as a lost
    connection: the meter's `fail` applies, never an exception that skips the reservation."""
    policy = Policy(fail=fail, teams={"t": Team(requests_per_minute=5)},  # type: ignore[arg-type]
                    state=StatePolicy(backend="redis", url=redis_url))
    state = RedisState(redis_url)
    lim = Limits(policy, state, FixedClock("2030-01-01T00:00:30Z"))
    gw = SimpleNamespace(policy=policy, limits=lim, pricer=Pricer())
    redis.Redis.from_url(redis_url).flushall()
    undo = _break_redis(redis_url, how)
    call = governed_call()
    try:
        with pytest.raises(StateUnavailable, match=f"redis at {re.escape(redis_url)}"):
            await lim.reserve("t", "c", 10, None)
        block = await Meter(gw).reserve(call)  # type: ignore[arg-type]
    finally:
        undo()
        await state.close()
    if fail == "closed":
        assert block is not None and (block.status, block.rule) == (503, "fail.closed")
    else:
        assert block is None and "fail.open: limits and budgets not checked (state unavailable)" in call.reasons
    assert call.error is not None and f"redis at {redis_url}" in call.error
    assert call.reservation is None


async def test_settling_against_a_failing_redis_is_recorded(redis_url: str) -> None:
    policy = Policy(teams={"t": Team(tokens_per_minute=1000)},  # type: ignore[arg-type]
                    state=StatePolicy(backend="redis", url=redis_url))
    state = RedisState(redis_url)
    lim = Limits(policy, state)
    redis.Redis.from_url(redis_url).flushall()
    res, refusal = await lim.reserve("t", "c", 100, None, datetime(2030, 1, 1, tzinfo=UTC))
    assert refusal is None and res is not None
    undo = _break_redis(redis_url, "readonly")
    try:
        with pytest.raises(StateUnavailable, match="ReadOnlyError"):
            await lim.settle(res, 10, None)
    finally:
        undo()
        await state.close()


# -- windows, messages and counters, with the figures worked out by hand ------------------------------

def one_team(clock: FixedClock, **quota: object) -> Limits:
    return Limits(Policy(teams={"t": Team(**quota)}), MemoryState(), clock)  # type: ignore[arg-type]


def reserve(lim: Limits, usd: float | None = None, tokens: int = 1) -> tuple[object, object]:
    return asyncio.run(lim.reserve("t", "c", tokens, usd))


@pytest.mark.parametrize(("start", "left", "next_window"), [
    ("2030-01-31T22:30:15Z", 86400 - (22 * 3600 + 30 * 60 + 15), "2030-02-01T00:00:00Z"),
    ("2030-06-15T00:00:00Z", 86400, "2030-06-16T00:00:00Z"),
])
def test_a_day_budget_waits_for_midnight_utc(start: str, left: int, next_window: str) -> None:
    clock = FixedClock(start)
    lim = one_team(clock, budget_usd_per_day=1.0)
    assert reserve(lim, 1.0)[1] is None
    refusal = reserve(lim, 0.01)[1]
    assert refusal is not None and refusal.retry_after == left  # type: ignore[attr-defined]
    assert refusal.message == "teams.t.budget_usd_per_day of $1.00 would be exceeded by this call (up to $0.0100)"  # type: ignore[attr-defined]
    clock.set(next_window)
    assert reserve(lim, 1.0)[1] is None


@pytest.mark.parametrize(("start", "left", "next_month"), [
    ("2028-02-29T23:59:30Z", 30, "2028-03-01T00:00:00Z"),  # a leap year's February
    ("2030-02-28T12:00:00Z", 12 * 3600, "2030-03-01T00:00:00Z"),
    ("2030-12-01T00:00:00Z", 31 * 86400, "2031-01-01T00:00:00Z"),
])
def test_a_month_budget_alone_waits_for_the_first_of_the_month(start: str, left: int, next_month: str) -> None:
    clock = FixedClock(start)
    lim = one_team(clock, budget_usd_per_month=1.0)  # no day budget: the month is counted on its own
    assert reserve(lim, 0.6)[1] is None
    refusal = reserve(lim, 0.6)[1]
    assert refusal is not None and refusal.rule == "teams.t.budget_usd_per_month"  # type: ignore[attr-defined]
    assert refusal.retry_after == left  # type: ignore[attr-defined]
    clock.set(next_month)
    assert reserve(lim, 0.6)[1] is None


def test_limit_refusals_say_which_limit_and_never_retry_at_zero() -> None:
    clock = FixedClock("2030-01-01T00:00:59.5Z")
    lim = one_team(clock, requests_per_minute=1, tokens_per_minute=1000)
    assert reserve(lim, tokens=10)[1] is None
    rpm = reserve(lim, tokens=10)[1]
    assert rpm is not None and rpm.message == "teams.t.requests_per_minute (1 requests per minute) is used up"  # type: ignore[attr-defined]
    assert rpm.retry_after == 1  # type: ignore[attr-defined]
    clock.advance(1)
    tpm = reserve(lim, tokens=1001)[1]
    assert tpm is not None and tpm.message == "teams.t.tokens_per_minute (1000 tokens per minute) is used up"  # type: ignore[attr-defined]
    assert tpm.retry_after == 60  # type: ignore[attr-defined]  (59.5 s left, rounded up)


def test_settling_replaces_the_reservation_with_what_was_used() -> None:
    state = MemoryState()
    lim = Limits(Policy(teams={"t": Team(tokens_per_minute=1000, budget_usd_per_day=5.0)}), state,
                 FixedClock("2030-01-01T10:00:00Z"))
    res, _ = asyncio.run(lim.reserve("t", "c", 300, 0.25))
    assert res is not None
    assert state.counters == {"teams.t:tpm@203001011000": 300, "teams.t:usd_day@20300101": 250_000}
    asyncio.run(lim.settle(res, 120, 0.1))  # type: ignore[arg-type]
    assert state.counters == {"teams.t:tpm@203001011000": 120, "teams.t:usd_day@20300101": 100_000}
    unknown, _ = asyncio.run(lim.reserve("t", "c", 50, None))
    asyncio.run(lim.settle(unknown, None, None))  # type: ignore[arg-type]
    assert state.counters["teams.t:tpm@203001011000"] == 170, "an unknown figure keeps the reservation"
    assert state.counters["teams.t:usd_day@20300101"] == 100_000, "an unpriced call reserves no dollars"


def test_counters_of_past_windows_are_dropped() -> None:
    clock = FixedClock("2030-01-01T10:00:00Z")
    state = MemoryState()
    lim = Limits(Policy(teams={"t": Team(requests_per_minute=5)}), state, clock)
    for _ in range(3):
        reserve(lim)
        clock.advance(60)
    assert state.counters == {"teams.t:rpm@203001011002": 1}, "one window kept, not one per minute forever"


async def test_redis_counters_outlive_their_window(redis_url: str) -> None:
    """Keys expire an hour after a budget window ends (two minutes for rate windows), never before."""
    redis.Redis.from_url(redis_url).flushall()
    state = RedisState(redis_url)
    lim = Limits(Policy(teams={"t": Team(requests_per_minute=5, budget_usd_per_day=5.0)}), state,
                 FixedClock("2030-01-01T23:00:00Z"))
    try:
        assert (await lim.reserve("t", "c", 1, 0.5))[1] is None
    finally:
        await state.close()
    r = redis.Redis.from_url(redis_url)
    assert 119 <= r.ttl("douane:teams.t:rpm@203001012300") <= 120
    assert 3600 + 3600 - 2 <= r.ttl("douane:teams.t:usd_day@20300101") <= 3600 + 3600


# -- the meter of one call: reserve its worst case, settle its usage ----------------------------------

PRICES = {"mock-priced-*": Price(input_per_mtok=1000, output_per_mtok=10000)}


def metered(clock: FixedClock, fail: str = "closed", **quota: object) -> tuple[Meter, MemoryState]:
    policy = Policy(fail=fail, teams={"t": Team(**quota)}, prices=PRICES)  # type: ignore[arg-type]
    state = MemoryState()
    gw = SimpleNamespace(policy=policy, limits=Limits(policy, state, clock), pricer=Pricer(policy.prices))
    return Meter(gw), state  # type: ignore[arg-type]


def priced_call(model: str = "mock-priced-1") -> Call:
    call = governed_call()
    call.model = model
    call.request_bytes = 400  # no parsed request: 400 bytes / 4 = 100 input tokens estimated
    call.max_output_tokens, call.choices = 50, 2
    return call


def test_the_meter_reserves_the_worst_case_and_settles_to_what_was_used() -> None:
    """100 input tokens estimated, up to 2 x 50 output: 200 tokens, and at $1000 / $10000 per
    million, $0.10 + $1.00 reserved. It used 90 + 60 tokens: $0.09 + $0.60."""
    meter, state = metered(FixedClock("2030-01-01T23:00:00Z"), requests_per_minute=10, tokens_per_minute=1000,
                           budget_usd_per_day=5.0)
    call = priced_call()
    assert asyncio.run(meter.reserve(call)) is None
    assert state.counters == {"teams.t:rpm@203001012300": 1, "teams.t:tpm@203001012300": 200,
                              "teams.t:usd_day@20300101": 1_100_000}
    call.usage = Usage(input_tokens=90, output_tokens=60)
    call.status = 200
    asyncio.run(meter.settle(call))
    assert call.reservation is None and call.cost_usd == pytest.approx(0.69)
    assert call.price_source == "policy prices.mock-priced-*"
    assert state.counters == {"teams.t:rpm@203001012300": 1, "teams.t:tpm@203001012300": 150,
                              "teams.t:usd_day@20300101": 690_000}


def test_a_call_that_does_not_fit_is_a_429_saying_when_to_retry() -> None:
    meter, _ = metered(FixedClock("2030-01-01T23:00:00Z"), budget_usd_per_day=5.0)
    blocks = [asyncio.run(meter.reserve(priced_call())) for _ in range(5)]  # $1.10 each: four fit in $5
    assert blocks[:4] == [None] * 4
    block = blocks[4]
    assert block is not None and (block.status, block.rule, block.always) == (429, "teams.t.budget_usd_per_day", True)
    assert block.headers == {"retry-after": "3600"}
    assert block.message == "teams.t.budget_usd_per_day of $5.00 would be exceeded by this call (up to $1.1000)"


def test_a_blocked_call_gives_its_whole_reservation_back() -> None:
    meter, state = metered(FixedClock("2030-01-01T12:00:00Z"), tokens_per_minute=1000, budget_usd_per_day=5.0)
    call = priced_call()
    asyncio.run(meter.reserve(call))
    call.decision, call.status = "blocked", 403
    asyncio.run(meter.settle(call))
    assert state.counters == {"teams.t:tpm@203001011200": 0, "teams.t:usd_day@20300101": 0}


@pytest.mark.parametrize("fail", ["closed", "open"])
def test_an_unpriced_model_under_a_budget_follows_fail(fail: str) -> None:
    meter, state = metered(FixedClock(), fail, budget_usd_per_day=5.0)
    call = priced_call("mock-unpriced-model")
    block = asyncio.run(meter.reserve(call))
    why = ("model mock-unpriced-model has no known price, so the budget cannot be held; "
           "price it under `prices:` in the policy")
    if fail == "closed":
        assert block is not None and (block.status, block.rule, block.message) == (403, "budget.unpriced_model", why)
        assert state.counters == {}
    else:
        assert block is None and call.reasons == [f"fail.open: {why}"]
        assert state.counters == {"teams.t:usd_day@20300101": 0}, "reserved, at no known price"


def test_an_unpriced_model_is_not_refused_where_no_budget_applies() -> None:
    meter, state = metered(FixedClock(), requests_per_minute=5)
    assert asyncio.run(meter.reserve(priced_call("mock-unpriced-model"))) is None
    assert state.counters == {"teams.t:rpm@203001010000": 1}


def test_the_state_failing_under_closed_is_a_503_enforced_in_monitor_mode_too() -> None:
    meter, _ = metered(FixedClock(), requests_per_minute=5)

    async def broken(takes: list) -> int | None:
        raise StateUnavailable("redis at redis://x is unreachable: refused")

    meter.gw.limits.state.reserve = broken  # type: ignore[method-assign]
    block = asyncio.run(meter.reserve(call := priced_call()))
    assert block is not None and (block.status, block.rule, block.always) == (503, "fail.closed", True)
    assert block.message == "limits and budgets cannot be checked right now; try again later"
    assert call.error == "redis at redis://x is unreachable: refused"


async def test_redis_names_the_limit_that_refused(redis_url: str) -> None:
    """The Lua script answers which take did not fit: the refusal names that limit, not its neighbour."""
    redis.Redis.from_url(redis_url).flushall()
    state = RedisState(redis_url)
    lim = Limits(Policy(teams={"t": Team(requests_per_minute=2, tokens_per_minute=100)}), state,
                 FixedClock("2030-01-01T00:00:30Z"))
    try:
        assert (await lim.reserve("t", "c", 60, None))[1] is None
        by_tokens = (await lim.reserve("t", "c", 60, None))[1]  # 120 tokens > 100, 2 requests fit
        assert (await lim.reserve("t", "c", 10, None))[1] is None
        by_requests = (await lim.reserve("t", "c", 10, None))[1]  # the third request
    finally:
        await state.close()
    assert by_tokens is not None and by_tokens.rule == "teams.t.tokens_per_minute"
    assert by_requests is not None and by_requests.rule == "teams.t.requests_per_minute"
    assert by_requests.retry_after == 30


def test_a_call_that_failed_upstream_without_usage_gives_its_reservation_back() -> None:
    meter, state = metered(FixedClock("2030-01-01T12:00:00Z"), tokens_per_minute=1000, budget_usd_per_day=5.0)
    call = priced_call()
    asyncio.run(meter.reserve(call))
    call.status = 500  # allowed, but the provider produced nothing
    asyncio.run(meter.settle(call))
    assert state.counters == {"teams.t:tpm@203001011200": 0, "teams.t:usd_day@20300101": 0}
    unknown = priced_call()
    asyncio.run(meter.reserve(unknown))
    unknown.status = 200  # an answer, but no usage and no estimate: the reservation stands
    asyncio.run(meter.settle(unknown))
    assert state.counters == {"teams.t:tpm@203001011200": 200, "teams.t:usd_day@20300101": 1_100_000}


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
    ("rediss://user:pw@h/1", "rediss://user:***@h/1"),
    ("redis://h:6379/0", "redis://h:6379/0"),
    ("unix:///run/redis.sock", "unix:///run/redis.sock"),
])
def test_a_redis_password_is_never_shown(url: str, shown: str) -> None:
    assert without_password(url) == shown


async def test_an_unreachable_redis_names_it_without_its_password() -> None:
    state = RedisState("redis://:hunter2@127.0.0.1:1/0")
    try:
        with pytest.raises(StateUnavailable) as e:
            await state.reserve([])
    finally:
        await state.close()
    assert "redis://:***@127.0.0.1:1/0" in str(e.value) and "hunter2" not in str(e.value)
