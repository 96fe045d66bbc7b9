from pathlib import Path

import pytest

from douane.policy import PolicyError, load_policy

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_shipped_policies_are_valid() -> None:
    files = [ROOT / "policies" / "default.yaml", *sorted((ROOT / "policies" / "examples").glob("*.yaml"))]
    assert len(files) >= 5
    for f in files:
        load_policy(f)


def test_default_policy_is_sensible() -> None:
    p = load_policy(ROOT / "policies" / "default.yaml")
    assert p.mode == "enforce" and p.fail == "closed" and p.pii.action == "redact"
    assert p.clients is None and p.audit.bodies == "redacted"


def test_errors_name_file_line_and_field(tmp_path: Path) -> None:
    f = write(tmp_path, "p.yaml", "version: 1\nmode: enforce\npii:\n  action: erase\n  colour: red\nteams:\n"
                                  "  support:\n    models: [a]\n    requests_per_minute: -3\n")
    with pytest.raises(PolicyError) as e:
        load_policy(f)
    got = {(i.line, i.field) for i in e.value.issues}
    assert (4, "pii.action") in got
    assert (5, "pii.colour") in got
    assert (9, "teams.support.requests_per_minute") in got
    assert all(i.file == str(f) for i in e.value.issues)
    text = str(e.value)
    assert f"{f}:5: pii.colour: unknown key" in text
    assert "'erase'" in text


def test_yaml_syntax_error_has_a_line(tmp_path: Path) -> None:
    f = write(tmp_path, "p.yaml", "version: 1\npii:\n  action: [redact\n")
    with pytest.raises(PolicyError) as e:
        load_policy(f)
    assert e.value.issues[0].line >= 3 and "YAML syntax" in e.value.issues[0].message


def test_cross_references_are_checked(tmp_path: Path) -> None:
    f = write(tmp_path, "p.yaml", "version: 1\nclients:\n  - name: bot\n    team: ghost\n"
                                  f"    key_sha256: \"{'a' * 64}\"\nproviders:\n  local:\n    hosts: [x.internal]\n")
    with pytest.raises(PolicyError) as e:
        load_policy(f)
    messages = {i.field: (i.line, i.message) for i in e.value.issues}
    assert messages["clients[0].team"] == (4, "team 'ghost' is not defined under teams:")
    assert "format" in messages["providers.local.format"][1]


def test_a_rule_naming_an_undefined_team_client_or_provider_is_refused(tmp_path: Path) -> None:
    """A misspelt name in a rule's `when:` would make the rule match nothing, silently."""
    f = write(tmp_path, "p.yaml", "\n".join([
        "version: 1", "teams:", "  support: {}", "clients:", "  - name: bot", "    team: support",
        f"    key_sha256: \"{'a' * 64}\"",
        "routes:", "  - when: {team: suport}", "    set_model: m",
        "defaults:", "  - when: {client: bto}", "    temperature: 0",
        "fallbacks:", "  - when: {provider: opneai}", "    to: [{provider: anthropic}]",
        "  - when: {team: support, client: bot, provider: openai}", "    to: [{provider: anthropic}]", ""]))
    with pytest.raises(PolicyError) as e:
        load_policy(f)
    messages = {i.field: i.message for i in e.value.issues}
    assert set(messages) == {"routes[0].when.team", "defaults[0].when.client", "fallbacks[0].when.provider"}
    assert "team 'suport' is not defined" in messages["routes[0].when.team"]
    # a policy without teams: or clients: sections has nothing to check such names against
    g = write(tmp_path, "q.yaml", "version: 1\nroutes:\n  - when: {team: support, client: bot}\n    set_model: m\n")
    assert load_policy(g).routes[0].when.team == "support"


def test_folder_merges_files_and_reports_clashes(tmp_path: Path) -> None:
    write(tmp_path, "10-base.yaml", "version: 1\npii:\n  action: block\nteams:\n  a: {models: ['*']}\n")
    write(tmp_path, "20-teams.yaml", "version: 1\nteams:\n  b: {models: [gpt-4o]}\nroutes:\n  - set_model: m\n")
    p = load_policy(tmp_path)
    assert set(p.teams) == {"a", "b"} and p.pii.action == "block" and len(p.routes) == 1
    write(tmp_path, "30-clash.yaml", "pii:\n  action: redact\n")
    with pytest.raises(PolicyError) as e:
        load_policy(tmp_path)
    issue = e.value.issues[0]
    assert issue.file.endswith("30-clash.yaml") and issue.line == 2 and "10-base.yaml:3" in issue.message


def test_errors_in_appended_lists_point_at_the_right_file(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "version: 1\nroutes:\n  - set_model: m\n")
    write(tmp_path, "b.yaml", "routes:\n  - set_model: n\n    sett_model: typo\n")
    with pytest.raises(PolicyError) as e:
        load_policy(tmp_path)
    issue = e.value.issues[0]
    assert issue.file.endswith("b.yaml") and issue.line == 3 and issue.field == "routes[1].sett_model"


def test_missing_path_is_explained(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="no such file"):
        load_policy(tmp_path / "nope.yaml")


def test_fallback_on_key_and_numeric_statuses(tmp_path: Path) -> None:
    """YAML 1.1 reads a bare `on` key as True; the contract's `on: [429, 5xx, timeout]` must work."""
    f = write(tmp_path, "p.yaml", "version: 1\nfallbacks:\n  - when: {model: gpt-4o}\n    on: [429, 5xx, timeout]\n"
                                  "    to: [{provider: anthropic, model: claude-sonnet-4-5}]\n")
    p = load_policy(f)
    assert p.fallbacks[0].on == ["429", "5xx", "timeout"]
    bad = write(tmp_path, "b.yaml", "version: 1\nfallbacks:\n  - on: [42x]\n    to: [{provider: anthropic}]\n")
    with pytest.raises(PolicyError) as e:
        load_policy(bad)
    assert e.value.issues[0].line == 3 and e.value.issues[0].field == "fallbacks[0].on"


def test_a_client_quota_is_named_by_its_place_in_the_policy(tmp_path: Path) -> None:
    """The rule a refusal names (clients[i]) is the client's path in the policy, for any of many clients."""
    from douane.meter.limits import Limits
    from douane.meter.state import MemoryState

    lines = ["version: 1", "teams:", "  t: {}", "clients:"]
    for i in range(500):
        limit = ", requests_per_minute: 5" if i % 7 == 3 else ""
        lines.append(f"  - {{name: c{i}, team: t, key_sha256: '{'a' * 64}'{limit}}}")
    limits = Limits(load_policy(write(tmp_path, "p.yaml", "\n".join(lines) + "\n")), MemoryState())
    assert limits.quotas("t", "c3")[0][0] == "clients[3]"
    assert [rule for rule, _ in limits.quotas("t", "c493")] == ["clients[493]"]
    assert limits.quotas("t", "c4") == [] and limits.quotas("t", "nobody") == []
    assert limits.quotas("t", "c3")[0][1].requests_per_minute == 5


def test_wrong_shapes_say_what_to_write(tmp_path: Path) -> None:
    f = write(tmp_path, "p.yaml", "version: 1\ninjection: 5\nclients: {}\npii:\n  entities: EMAIL_ADDRESS\n"
                                  "fallbacks:\n  - when: {}\n")
    with pytest.raises(PolicyError) as e:
        load_policy(f)
    got = {i.field: (i.line, i.message) for i in e.value.issues}
    line, message = got["injection"]
    assert line == 2 and message.startswith("must be a mapping of keys such as action, threshold")
    assert message.endswith("(got 5)")
    assert got["clients"][0] == 3 and got["clients"][1].startswith("must be a list")
    assert got["pii.entities"] == (5, "must be a list: [a, b], or one `- item` per line (got 'EMAIL_ADDRESS')")
    assert got["fallbacks[0].to"] == (7, "required: add this key")
