"""A policy with many mistakes gets all of them in one report, each with file, line and field."""

from pathlib import Path

import pytest

from douane.policy import PolicyError, load_policy

KEY = "a" * 64


def issues_of(path: Path) -> list:
    with pytest.raises(PolicyError) as e:
        load_policy(path)
    return e.value.issues


def where(issues: list) -> list[tuple[str, int, str]]:
    return [(Path(i.file).name, i.line, i.field) for i in issues]


def test_duplicates_schema_errors_and_cross_checks_in_one_report(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("version: 1\n"                          # 1
                 "mode: enforce\n"                       # 2
                 "mode: monitor\n"                       # 3 key twice
                 "fail: maybe\n"                         # 4 schema
                 "teams:\n"                              # 5
                 "  support: {}\n"                       # 6
                 "  support: {}\n"                       # 7 key twice
                 "clients:\n"                            # 8
                 "  - name: bot\n"                       # 9
                 "    team: ghost\n"                     # 10 cross-check
                 f"    key_sha256: '{KEY}'\n"            # 11
                 "  - name: bot\n"                       # 12 cross-check: twice
                 "    team: support\n"                   # 13
                 "    key_sha256: short\n")              # 14 schema
    issues = issues_of(f)
    assert where(issues) == [("p.yaml", 3, "mode"), ("p.yaml", 4, "fail"), ("p.yaml", 7, "teams.support"),
                             ("p.yaml", 10, "clients[0].team"), ("p.yaml", 12, "clients[1].name"),
                             ("p.yaml", 14, "clients[1].key_sha256")]
    assert "first at line 2" in issues[0].message
    assert "clients[0]" in issues[4].message and "p.yaml:9" in issues[4].message


def test_every_clash_between_files_is_reported(tmp_path: Path) -> None:
    (tmp_path / "10-a.yaml").write_text("version: 1\nmode: enforce\nfail: closed\npii:\n  action: block\n")
    (tmp_path / "20-b.yaml").write_text("mode: monitor\nfail: open\npii:\n  action: redact\n  colour: red\n")
    issues = issues_of(tmp_path)
    assert where(issues) == [("20-b.yaml", 1, "mode"), ("20-b.yaml", 2, "fail"), ("20-b.yaml", 4, "pii.action"),
                             ("20-b.yaml", 5, "pii.colour")]
    assert "10-a.yaml:2" in issues[0].message and "10-a.yaml:5" in issues[2].message


def test_a_syntax_error_stops_its_file_only(tmp_path: Path) -> None:
    (tmp_path / "10-broken.yaml").write_text("version: 1\nteams:\n  a: [unclosed\n")
    (tmp_path / "20-fine.yaml").write_text("mode: strict\nroutes:\n  - set_modle: x\n")
    issues = issues_of(tmp_path)
    assert [Path(i.file).name for i in issues] == ["10-broken.yaml", "20-fine.yaml", "20-fine.yaml"]
    assert "YAML syntax" in issues[0].message
    assert {i.field for i in issues[1:]} == {"mode", "routes[0].set_modle"}


def test_references_are_not_judged_while_a_file_is_unreadable(tmp_path: Path) -> None:
    """The broken file may define the team: saying it is missing would send the author the wrong way."""
    (tmp_path / "10-teams.yaml").write_text("version: 1\nteams:\n  support: {models: [gpt-4o\n")
    (tmp_path / "20-clients.yaml").write_text(f"clients:\n  - {{name: bot, team: support, key_sha256: '{KEY}'}}\n")
    issues = issues_of(tmp_path)
    assert len(issues) == 1 and issues[0].file.endswith("10-teams.yaml")
    assert "not checked" in issues[0].message


def test_cross_checks_run_alongside_schema_errors(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("version: 1\nproviders:\n  local:\n    hosts: [x.internal]\n    upstream: nope\n"
                 "routes:\n  - set_provider: ghost\nteams:\n  t: {providers: [openai, local, gone]}\n")
    issues = issues_of(f)
    got = {(i.line, i.field) for i in issues}
    assert got == {(3, "providers.local.format"), (5, "providers.local.upstream"), (7, "routes[0].set_provider"),
                   (9, "teams.t.providers[2]")}


def test_unknown_keys_suggest_the_known_ones(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("version: 1\npii:\n  actoin: block\nrouts: []\n")
    issues = {i.field: i.message for i in issues_of(f)}
    assert "did you mean 'action'" in issues["pii.actoin"] and "score_threshold" in issues["pii.actoin"]
    assert "did you mean 'routes'" in issues["routs"]


def test_many_clients_with_one_duplicate(tmp_path: Path) -> None:
    """Cross-checks over many clients name the right entry and the first one."""
    lines = ["version: 1", "teams:", "  t: {}", "clients:"]
    for i in range(3000):
        lines.append(f"  - {{name: c{i}, team: t, key_sha256: '{KEY}'}}")
    lines.append(f"  - {{name: c1500, team: t, key_sha256: '{KEY}'}}")
    f = tmp_path / "p.yaml"
    f.write_text("\n".join(lines) + "\n")
    issues = issues_of(f)
    assert where(issues) == [("p.yaml", 3005, "clients[3000].name")]
    assert "clients[1500]" in issues[0].message and "p.yaml:1505" in issues[0].message
