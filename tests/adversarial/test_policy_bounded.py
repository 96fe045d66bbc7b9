"""Policy files built to make the loader work without end, or to crash it: each gets a clear error."""

import subprocess
import sys
from pathlib import Path

import pytest

from douane.policy import PolicyError, load_policy

ROOT = Path(__file__).resolve().parents[2]

# 353 bytes that expand to 9**9 (387 million) strings: "billion laughs".
ALIAS_BOMB = "version: 1\na: &a [" + ",".join(['"lol"'] * 9) + "]\n" + "".join(
    f"{b}: &{b} [{','.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True))


def issues_of(path: Path) -> list:
    with pytest.raises(PolicyError) as e:
        load_policy(path)
    return e.value.issues


def write(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_a_small_alias_bomb_is_refused_with_its_line(tmp_path: Path) -> None:
    """9**6 values from six lines: small enough to expand, far past what a policy shares by alias."""
    levels = "a: &a [" + ",".join(["x"] * 9) + "]\n" + "".join(
        f"{b}: &{b} [{','.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcde", "bcdef", strict=True))
    issues = issues_of(write(tmp_path, "version: 1\n" + levels))
    assert len(issues) == 1, issues
    assert "alias" in issues[0].message and issues[0].line >= 2


def test_the_billion_laughs_check_ends_with_a_clear_error(tmp_path: Path) -> None:
    """The 353-byte bomb kept `policy check` busy for minutes; the deadline only stops a regression hanging."""
    bomb = write(tmp_path, ALIAS_BOMB)
    assert len(ALIAS_BOMB) < 400
    done = subprocess.run([sys.executable, "-m", "douane.cli", "policy", "check", str(bomb)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert f"{bomb}:" in done.stderr and "alias" in done.stderr and "Traceback" not in done.stderr


def test_shared_lists_and_merge_keys_still_work(tmp_path: Path) -> None:
    """Anchors are how authors share a model list or a team's limits: they must keep working."""
    f = write(tmp_path, "version: 1\nteams:\n  support:\n    models: &chat [gpt-4o-mini, 'claude-*']\n"
                        "    requests_per_minute: &rpm 60\n  sales:\n    models: *chat\n"
                        "    requests_per_minute: *rpm\n  ops: &limits\n    budget_usd_per_day: 5.0\n"
                        "    tokens_per_minute: 1000\n  research:\n    <<: *limits\n    tokens_per_minute: 9\n")
    p = load_policy(f)
    assert p.teams["sales"].models == ["gpt-4o-mini", "claude-*"] and p.teams["sales"].requests_per_minute == 60
    assert p.teams["research"].budget_usd_per_day == 5.0, "merged from the anchor"
    assert p.teams["research"].tokens_per_minute == 9, "a key written out wins over the merged one"


def test_an_error_in_a_merged_value_points_at_the_anchor(tmp_path: Path) -> None:
    f = write(tmp_path, "version: 1\nteams:\n  base: &base\n    budget_usd_per_day: lots\n  a:\n    <<: *base\n")
    issues = issues_of(f)
    assert {(i.field, i.line) for i in issues} == {("teams.base.budget_usd_per_day", 4),
                                                   ("teams.a.budget_usd_per_day", 4)}


def test_a_merge_key_needs_a_mapping(tmp_path: Path) -> None:
    issues = issues_of(write(tmp_path, "version: 1\nteams:\n  a:\n    <<: [1, 2]\n"))
    assert issues[0].line == 4 and "mapping" in issues[0].message


def test_an_alias_that_contains_itself_is_refused(tmp_path: Path) -> None:
    issues = issues_of(write(tmp_path, "version: 1\nteams: &t\n  x: *t\n"))
    assert len(issues) == 1 and issues[0].line == 3 and "contains itself" in issues[0].message


@pytest.mark.parametrize("text", [
    "a: " + "[" * 5000 + "]" * 5000 + "\n",
    "".join("  " * i + "a:\n" for i in range(3000)) + "  " * 3000 + "b: 1\n",
    "version: 1\nteams:\n" + "".join("  " * (i + 1) + f"t{i}:\n" for i in range(100)) + "  " * 101 + "x: 1\n",
])
def test_deep_nesting_is_refused(tmp_path: Path, text: str) -> None:
    issues = issues_of(write(tmp_path, text))
    assert len(issues) == 1 and "nest" in issues[0].message, issues


def test_a_key_that_is_not_a_name(tmp_path: Path) -> None:
    issues = issues_of(write(tmp_path, "version: 1\n? [a, b]\n: 1\nmode: strict\n"))
    assert [(i.line, "plain name" in i.message) for i in issues][0] == (2, True)
    assert any(i.field == "mode" for i in issues), "the rest of the file is still checked"


def test_python_tags_are_refused(tmp_path: Path) -> None:
    issues = issues_of(write(tmp_path, "version: 1\nmode: !!python/object/apply:os.system [echo hi]\n"))
    assert issues[0].line == 2 and issues[0].field == "mode" and "tag" in issues[0].message


def test_control_characters_are_a_syntax_error_with_a_line(tmp_path: Path) -> None:
    issues = issues_of(write(tmp_path, "version: 1\nmode: en\x07force\n"))
    assert issues[0].line == 2 and "character" in issues[0].message


def test_a_file_that_is_not_a_mapping(tmp_path: Path) -> None:
    issues = issues_of(write(tmp_path, "- version: 1\n"))
    assert issues[0].line == 1 and "mapping" in issues[0].message


@pytest.mark.parametrize("text", [ALIAS_BOMB, "a: " + "[" * 5000 + "]" * 5000 + "\n"])
def test_the_pure_python_parser_is_bounded_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    """Without libyaml the loader falls back to PyYAML's Python parser, which recurses as deep as the file."""
    import yaml

    import douane.policy.loader as loader

    monkeypatch.setattr(loader, "_LOADER", yaml.SafeLoader)
    issues = issues_of(write(tmp_path, text))
    assert len(issues) == 1 and ("alias" in issues[0].message or "nested" in issues[0].message), issues


def test_scalars_python_cannot_convert_are_errors(tmp_path: Path) -> None:
    """int() refuses 5,000 digits (CVE-2020-10735's limit) and `!!int abc`: a ValueError, not a traceback."""
    issues = issues_of(write(tmp_path, "version: 1\nteams:\n  t:\n    requests_per_minute: " + "1" * 5000
                             + "\nmode: !!int abc\n"))
    assert [(i.line, i.field) for i in issues] == [(4, "teams.t.requests_per_minute"), (5, "mode")]
    assert all("cannot read" in i.message for i in issues)
