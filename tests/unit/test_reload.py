"""Policy reload (douane.reload, douane.gateway.Generation): validated, swapped whole, refused when
invalid with the old policy kept; calls bound to the policy they started under; state carried over."""

from __future__ import annotations

import asyncio
import contextvars
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from douane.call import Call, new_call_id
from douane.cli import main
from douane.clock import FixedClock
from douane.gateway import Gateway, policy_digest
from douane.policy.loader import PolicyError, load_policy
from douane.reload import Reloader


class Writer:
    def __init__(self) -> None:
        self.records: list[Any] = []

    def submit(self, record: Any) -> None:
        self.records.append(record)


def write(path: Path, **policy: Any) -> Path:
    path.write_text(yaml.safe_dump({"version": 1, **policy}))
    return path


def gateway(path: Path) -> tuple[Gateway, Writer]:
    writer = Writer()
    gw = Gateway(load_policy(path), None, writer=writer, clock=FixedClock("2030-01-01T00:00:10Z"))  # type: ignore[arg-type]
    return gw, writer


def recorded_call(gw: Gateway) -> Call:
    call = Call(id=new_call_id(), started=0.0, provider=gw.providers.by_name("openai"), host="api.openai.com",
                method="POST", path="/v1/chat/completions", endpoint="chat")
    gw.record(call)
    return call


@pytest.fixture()
def policy_path(tmp_path: Path) -> Path:
    return write(tmp_path / "policy.yaml", mode="enforce", teams={"ops": {"requests_per_minute": 2}})


def test_an_invalid_policy_is_refused_with_the_checkers_errors_and_the_old_one_stays(policy_path: Path) -> None:
    gw, _ = gateway(policy_path)
    before = gw.current
    policy_path.write_text("version: 1\nmode: enforce\npii:\n  action: shred\n")
    with pytest.raises(PolicyError) as checked:
        load_policy(policy_path)

    outcome = asyncio.run(Reloader(gw, policy_path).reload())

    assert outcome.status == "refused"
    assert outcome.problems == [str(i) for i in checked.value.issues]  # the same line-exact errors
    assert f"{policy_path}:4" in outcome.problems[0] and "pii.action" in outcome.problems[0]
    assert gw.current is before and gw.policy.teams["ops"].requests_per_minute == 2


def test_a_policy_the_environment_cannot_serve_is_refused(policy_path: Path) -> None:
    gw, _ = gateway(policy_path)
    before = gw.current
    write(policy_path, providers={"openai": {"api_key_env": "DOUANE_TEST_NO_SUCH_KEY"}})

    outcome = asyncio.run(Reloader(gw, policy_path).reload())

    assert outcome.status == "refused" and "DOUANE_TEST_NO_SUCH_KEY" in outcome.problems[0]
    assert gw.current is before


def test_another_state_backend_needs_a_restart(policy_path: Path) -> None:
    gw, _ = gateway(policy_path)
    write(policy_path, state={"backend": "redis", "url": "redis://127.0.0.1:1/0"})

    outcome = asyncio.run(Reloader(gw, policy_path).reload())

    assert outcome.status == "refused" and "restart douane" in outcome.problems[0]


def test_a_valid_policy_is_put_in_force_and_rows_name_it(policy_path: Path) -> None:
    gw, writer = gateway(policy_path)
    old_hash = gw.policy_hash
    recorded_call(gw)
    write(policy_path, mode="monitor")

    outcome = asyncio.run(Reloader(gw, policy_path).reload())
    recorded_call(gw)

    assert outcome.status == "loaded" and gw.policy.mode == "monitor"
    assert gw.policy_hash == policy_digest(load_policy(policy_path)) != old_hash
    assert [r.policy_hash for r in writer.records] == [old_hash, gw.policy_hash]


def test_the_same_rules_again_change_nothing(policy_path: Path) -> None:
    gw, _ = gateway(policy_path)
    before = gw.current
    policy_path.write_text("# a comment only\n" + policy_path.read_text())

    assert asyncio.run(Reloader(gw, policy_path).reload()).status == "unchanged"
    assert gw.current is before


def test_a_call_bound_before_a_reload_is_judged_and_recorded_under_its_own_policy(policy_path: Path) -> None:
    gw, writer = gateway(policy_path)
    old = gw.current
    started = contextvars.copy_context()
    started.run(gw.bind, old)  # a flow that started under the old policy (addons.generation binds it)
    write(policy_path, mode="monitor")
    asyncio.run(Reloader(gw, policy_path).reload())

    assert started.run(lambda: gw.policy.mode) == "enforce"
    assert gw.policy.mode == "monitor"  # a new call, outside that flow
    started.run(recorded_call, gw)
    assert writer.records[-1].policy_hash == old.hash


def test_limits_keep_their_counts_across_a_reload(policy_path: Path) -> None:
    gw, _ = gateway(policy_path)

    async def one_call() -> str | None:
        _, refusal = await gw.limits.reserve("ops", "anonymous", 10, None)
        return refusal.rule if refusal else None

    async def scenario() -> list[str | None]:
        got = [await one_call(), await one_call()]  # the old policy's 2 a minute, both taken
        write(policy_path, mode="enforce", teams={"ops": {"requests_per_minute": 3}})
        assert (await Reloader(gw, policy_path).reload()).status == "loaded"
        return got + [await one_call(), await one_call()]

    # the new limit of 3 counts the 2 calls made before it: one more, then refused
    assert asyncio.run(scenario()) == [None, None, None, "teams.ops.requests_per_minute"]


def test_the_breaker_keeps_its_counts_and_takes_the_new_settings(policy_path: Path) -> None:
    gw, _ = gateway(policy_path)
    breakers = gw.relay.breakers
    write(policy_path, mode="enforce", breaker={"failures": 7, "cooldown_s": 5})

    asyncio.run(Reloader(gw, policy_path).reload())

    assert gw.relay.breakers is breakers and (breakers.failures, breakers.cooldown) == (7, 5)


def test_signals_during_a_reload_fold_into_one_more(policy_path: Path) -> None:
    gw, _ = gateway(policy_path)

    class Paused(Reloader):
        """The first reload waits, once it has begun, until the test has sent its signals."""

        async def reload(self, why: str = "reload") -> Any:
            if not self.outcomes:
                began.set()
                await release.wait()
            return await super().reload(why)

    reloader = Paused(gw, policy_path)

    async def scenario() -> None:
        reloader.request()
        await began.wait()
        reloader.request()  # while the first runs: folded into one more after it, which reads the last edit
        write(policy_path, mode="monitor")
        reloader.request()
        release.set()
        assert reloader.task is not None
        await reloader.task

    began, release = asyncio.Event(), asyncio.Event()
    asyncio.run(scenario())
    assert len(reloader.outcomes) == 2 and gw.policy.mode == "monitor"  # three signals, two reloads


def test_policy_check_prints_the_hash_the_rows_carry(policy_path: Path) -> None:
    gw, _ = gateway(policy_path)
    text = CliRunner().invoke(main, ["policy", "check", str(policy_path)])
    as_json = CliRunner().invoke(main, ["policy", "check", "--format", "json", str(policy_path)])

    assert text.exit_code == 0 and text.output.strip().endswith(f"policy_hash {gw.policy_hash}")
    assert as_json.exit_code == 0 and yaml.safe_load(as_json.output)["policy_hash"] == gw.policy_hash
