"""douane.defaults on bodies of each format: what is set, capped, prepended once, and what is left
for the parser to refuse; the policy keys' own checks."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from douane.call import Call
from douane.defaults import standardise
from douane.policy import Policy, PolicyError, load_policy
from douane.providers import ProviderSpec

ORG = "Be kind."


def policy(tmp_path: Path, **rule: Any) -> Policy:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "defaults": [{"system_prompt": ORG, **rule}]}))
    return load_policy(path)


def call(fmt: str, endpoint: str, path: str = "/v1/x") -> Call:
    return Call(id="c", started=0.0, provider=ProviderSpec(fmt, fmt, ("h",)), host="h", method="POST", path=path,
                endpoint=endpoint, client="bot")


def test_responses_instructions_get_the_prompt_first_once(tmp_path: Path) -> None:
    p, c = policy(tmp_path), call("openai", "responses")
    body: dict[str, Any] = {"model": "gpt-4o", "input": "hi", "instructions": "Answer in French."}
    assert standardise(p, c, body, True) is None
    assert body["instructions"] == f"{ORG}\n\nAnswer in French."
    again = copy.deepcopy(body)
    standardise(p, call("openai", "responses"), again, True)
    assert again == body


def test_anthropic_system_blocks_get_a_block_first(tmp_path: Path) -> None:
    body: dict[str, Any] = {"model": "m", "max_tokens": 5, "system": [{"type": "text", "text": "Terse."}],
                            "messages": []}
    standardise(policy(tmp_path), call("anthropic", "messages"), body, True)
    assert body["system"] == [{"type": "text", "text": ORG}, {"type": "text", "text": "Terse."}]


@pytest.mark.parametrize(("fmt", "endpoint", "body"), [
    ("anthropic", "messages", {"model": "m", "max_tokens": 5, "system": 42, "messages": []}),
    ("gemini", "generateContent", {"contents": [], "systemInstruction": {"parts": "text"}}),
])
def test_a_system_field_not_shaped_as_documented_is_left_for_the_parser(tmp_path: Path, fmt: str, endpoint: str,
                                                                        body: dict[str, Any]) -> None:
    before = copy.deepcopy(body)
    standardise(policy(tmp_path), call(fmt, endpoint, "/v1beta/models/g:generateContent"), body, True)
    assert body == before


def test_a_reject_cap_blocks_when_enforcing_and_is_noted_in_monitor_mode(tmp_path: Path) -> None:
    p = policy(tmp_path, max_tokens_cap={"cap": 100, "over": "reject"})
    body = {"model": "m", "max_tokens": 500, "messages": [{"role": "user", "content": "x"}]}

    block = standardise(p, call("openai", "chat.completions"), copy.deepcopy(body), True)
    monitored = call("openai", "chat.completions")
    unchanged = copy.deepcopy(body)

    assert block is not None and (block.status, block.rule) == (400, "defaults[0].max_tokens_cap")
    assert standardise(p, monitored, unchanged, False) is None and unchanged == body
    assert "monitor: would block defaults[0].max_tokens_cap" in monitored.reasons


def test_the_rule_matches_on_the_gemini_models_path(tmp_path: Path) -> None:
    p = policy(tmp_path, when={"model": "gemini-2.0-*"})
    hit, miss = {"contents": []}, {"contents": []}
    standardise(p, call("gemini", "generateContent", "/v1beta/models/gemini-2.0-flash:generateContent"), hit, True)
    standardise(p, call("gemini", "generateContent", "/v1beta/models/gemini-1.5-pro:generateContent"), miss, True)
    assert hit["systemInstruction"] == {"parts": [{"text": ORG}]} and miss == {"contents": []}


@pytest.mark.parametrize(("rule", "said"), [
    ({"when": {"min_input_tokens": 10}}, "not available to defaults"),
    ({"max_tokens": 900, "max_tokens_cap": {"cap": 500}}, "max_tokens 900 is over max_tokens_cap.cap 500"),
    ({"max_tokens_cap": {"cap": 500, "over": "shrink"}}, "max_tokens_cap.over"),
])
def test_the_policy_refuses_rules_that_cannot_work(tmp_path: Path, rule: dict[str, Any], said: str) -> None:
    with pytest.raises(PolicyError) as e:
        policy(tmp_path, **rule)
    assert said in str(e.value) or any(said in str(i) for i in e.value.issues)
