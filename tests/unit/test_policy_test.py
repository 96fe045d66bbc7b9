"""`douane policy test`: the shipped example tests pass (this is how CI runs them), failures are
reported in each format with exit 1, malformed test files are refused with where and what, and a
run never touches the network."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest
import yaml
from click.testing import CliRunner

from douane.cli import main

ROOT = Path(__file__).resolve().parents[2]
TESTS = sorted((ROOT / "policies" / "tests").glob("*.yaml"))


def policy_for(test_file: Path) -> Path:
    """policies/tests/default.yaml tests policies/default.yaml; any other name, policies/examples/<name>."""
    if test_file.stem == "default":
        return ROOT / "policies" / "default.yaml"
    return ROOT / "policies" / "examples" / test_file.name


def run(*args: str) -> Any:
    return CliRunner().invoke(main, ["policy", "test", *args])


def test_there_are_shipped_tests() -> None:
    assert len(TESTS) >= 5


@pytest.mark.parametrize("test_file", TESTS, ids=[t.stem for t in TESTS])
def test_a_shipped_policy_passes_its_shipped_tests(test_file: Path) -> None:
    result = run(str(policy_for(test_file)), str(test_file), "--format", "json")
    report = json.loads(result.output)
    assert [c["failures"] for c in report["cases"] if not c["passed"]] == []
    assert result.exit_code == 0 and report["failed"] == 0 and report["passed"] >= 1


@pytest.fixture()
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "pii": {"action": "block", "entities": ["EMAIL_ADDRESS"]}}))
    return path


def cases(tmp_path: Path, *items: dict[str, Any]) -> Path:
    path = tmp_path / "cases.yaml"
    path.write_text(yaml.safe_dump({"cases": list(items)}))
    return path


MAIL = {"name": "mail", "prompt": "write to jane@example.com"}


def test_an_unmet_expectation_fails_the_run_and_says_what_came_instead(policy: Path, tmp_path: Path) -> None:
    file = cases(tmp_path, {**MAIL, "expect": {"decision": "blocked", "rule": "pii.block"}},
                 {**MAIL, "name": "wrong", "expect": {"decision": "allowed", "forwarded_contains": "jane"}})

    result = run(str(policy), str(file), "--format", "json")

    report = json.loads(result.output)
    assert result.exit_code == 1 and (report["passed"], report["failed"]) == (1, 1)
    wrong = report["cases"][1]
    assert wrong["failures"] == ["decision: expected 'allowed', got 'blocked'",
                                 "forwarded_contains: 'jane' missing; nothing was forwarded"]
    assert wrong["got"]["status"] == 403 and wrong["got"]["pii_entities"] == ["EMAIL_ADDRESS"]


def test_the_table_and_junit_reports(policy: Path, tmp_path: Path) -> None:
    file = cases(tmp_path, {**MAIL, "expect": {"decision": "blocked"}},
                 {**MAIL, "name": "no", "expect": {"status": 200}})

    table = run(str(policy), str(file))
    junit = run(str(policy), str(file), "--format", "junit")

    assert table.exit_code == 1 and "1 passed, 1 failed" in table.output
    assert f"FAIL {file}: cases[1] (no)\n  status: expected 200, got 403\n" in table.output
    suite = ET.fromstring(junit.output.split("?>", 1)[1])
    assert junit.exit_code == 1 and (suite.get("tests"), suite.get("failures")) == ("2", "1")
    failure = suite.find("testcase[@name='no']/failure")
    assert failure is not None and failure.get("message") == "status: expected 200, got 403"


@pytest.mark.parametrize(("case", "said"), [
    ({"prompt": "hi", "expect": {"decision": "allowed"}, "colour": "red"}, "unknown key(s) colour"),
    ({"prompt": "hi"}, "`expect:` is missing"),
    ({"prompt": "hi", "expect": {"verdict": "allowed"}}, "unknown expect key(s) verdict"),
    ({"expect": {"decision": "allowed"}}, "give the call's body"),
    ({"prompt": "hi", "repeat": 0, "expect": {"decision": "allowed"}}, "`repeat:` is a whole number"),
])
def test_a_malformed_case_is_refused_with_where_and_what(policy: Path, tmp_path: Path, case: dict[str, Any],
                                                         said: str) -> None:
    file = cases(tmp_path, {"prompt": "fine", "expect": {"decision": "allowed"}}, case)

    result = run(str(policy), str(file))

    assert result.exit_code == 1 and f"{file}: cases[1]" in result.output and said in result.output


def test_a_case_naming_an_unknown_client_fails_and_names_the_known_ones(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(yaml.safe_dump({"version": 1, "teams": {"ops": {}},
                                      "clients": [{"name": "bot", "team": "ops", "key_sha256": "0" * 64}]}))
    file = cases(tmp_path, {"client": "robot", "prompt": "hi", "expect": {"decision": "allowed"}})

    result = run(str(policy), str(file), "--format", "json")

    assert result.exit_code == 1 and "not one of the policy's clients (bot)" in json.loads(result.output)["cases"][0][
        "failures"][0]


def test_an_invalid_policy_exits_1_with_its_errors(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("version: 1\npii:\n  action: shred\n")
    result = run(str(policy), str(cases(tmp_path, {**MAIL, "expect": {"decision": "allowed"}})))
    assert result.exit_code == 1 and f"{policy}:3" in result.output


def test_a_run_never_opens_a_connection(policy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"policy test opened a connection: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    file = cases(tmp_path, {**MAIL, "expect": {"decision": "blocked"}},
                 {"prompt": "hello", "stream": True, "answer": "hi there", "expect": {"answer_contains": "there"}})

    result = run(str(policy), str(file), "--format", "json")

    assert result.exit_code == 0, result.output


def test_budgets_and_limits_count_the_repeated_calls_of_a_case_only(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(yaml.safe_dump({"version": 1, "teams": {"ops": {"requests_per_minute": 2}},
                                      "clients": [{"name": "bot", "team": "ops", "key_sha256": "0" * 64}]}))
    third = {"client": "bot", "prompt": "hi", "repeat": 3,
             "expect": {"decision": "blocked", "status": 429, "rule": "teams.ops.requests_per_minute"}}
    second = {"client": "bot", "prompt": "hi", "repeat": 2, "expect": {"decision": "allowed"}}

    result = run(str(policy), str(cases(tmp_path, third, second)), "--format", "json")

    assert result.exit_code == 0, result.output  # the second case starts with fresh counters
