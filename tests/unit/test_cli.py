import json
import stat
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from click.testing import CliRunner

from douane.audit import AuditRecord, AuditStore, AuditWriter
from douane.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_ca_path_creates_the_ca_with_a_private_key(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["ca", "--path", "--certs", str(tmp_path / "certs")])
    assert result.exit_code == 0, result.output
    cert = Path(result.output.strip().splitlines()[-1])
    assert cert.is_absolute() and cert.exists() and b"BEGIN CERTIFICATE" in cert.read_bytes()
    key = tmp_path / "certs" / "mitmproxy-ca.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    again = CliRunner().invoke(main, ["ca", "--path", "--certs", str(tmp_path / "certs")])
    assert again.output.strip().splitlines()[-1] == str(cert), "an existing CA is kept"


def test_ca_bundle_has_system_cas_and_ours(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.pem"
    result = CliRunner().invoke(main, ["ca", "--bundle", str(bundle), "--certs", str(tmp_path / "certs")])
    assert result.exit_code == 0, result.output
    text = bundle.read_text()
    ours = (tmp_path / "certs" / "mitmproxy-ca-cert.pem").read_text()
    assert text.rstrip().endswith(ours.rstrip())
    assert text.count("BEGIN CERTIFICATE") > 10


def test_ca_without_a_flag_says_what_to_do(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["ca", "--certs", str(tmp_path)])
    assert result.exit_code == 2 and "--path or --bundle" in result.output


def test_policy_check_exit_codes(tmp_path: Path) -> None:
    ok = CliRunner().invoke(main, ["policy", "check", str(ROOT / "policies" / "default.yaml")])
    assert ok.exit_code == 0 and "valid: mode enforce" in ok.output and len(ok.output.splitlines()) == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nmode: strict\nfail: maybe\n")
    result = CliRunner().invoke(main, ["policy", "check", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:2: mode" in result.output and f"{bad}:3: fail" in result.output
    as_json = CliRunner().invoke(main, ["policy", "check", "--format", "json", str(bad)])
    assert json.loads(as_json.output)["valid"] is False


def test_audit_query_formats(tmp_path: Path) -> None:
    db = tmp_path / "a.duckdb"
    w = AuditWriter(AuditStore(db))
    w.start()
    w.submit(AuditRecord(id="dou_1", ts=datetime(2026, 1, 2, tzinfo=UTC), provider="openai", status=200,
                         pii_entities=["EMAIL_ADDRESS"]))
    w.close()
    sql = "SELECT id, ts, status, pii_entities FROM requests"
    rows = json.loads(CliRunner().invoke(main, ["audit", "query", "--db", str(db), "--format", "json", sql]).output)
    assert rows == [{"id": "dou_1", "ts": "2026-01-02T00:00:00+00:00", "status": 200,
                     "pii_entities": ["EMAIL_ADDRESS"]}]
    csv_out = CliRunner().invoke(main, ["audit", "query", "--db", str(db), "--format", "csv", sql]).output
    assert csv_out.splitlines()[0] == "id,ts,status,pii_entities"
    table = CliRunner().invoke(main, ["audit", "query", "--db", str(db), sql])
    assert table.exit_code == 0 and "dou_1" in table.output and "1 row(s)" in table.output
    bad = CliRunner().invoke(main, ["audit", "query", "--db", str(db), "SELECT nope FROM requests"])
    assert bad.exit_code == 1 and "query failed" in bad.output
    missing = CliRunner().invoke(main, ["audit", "query", "--db", str(tmp_path / "none.duckdb"), "SELECT 1"])
    assert missing.exit_code == 1 and "start the proxy once" in missing.output


def test_reports(tmp_path: Path) -> None:
    db = tmp_path / "a.duckdb"
    w = AuditWriter(AuditStore(db))
    w.start()
    now = datetime.now(UTC)
    for i, (team, model, cost, decision) in enumerate([
            ("support", "gpt-4o-mini", 0.5, "allowed"), ("support", "gpt-4o-mini", 0.25, "allowed"),
            ("research", "claude-haiku-4-5", 2.0, "allowed"), ("support", "mystery", None, "allowed"),
            ("support", "gpt-4o", None, "blocked")]):
        w.submit(AuditRecord(id=f"r{i}", ts=now, client=f"{team}-bot", team=team, provider="openai", model=model,
                             cost_usd=cost, status=200 if decision == "allowed" else 403, decision=decision,
                             reason="teams.support.models" if decision == "blocked" else None,
                             input_tokens=10, output_tokens=5))
    w.close()
    by_team = json.loads(CliRunner().invoke(main, ["audit", "report", "cost", "--by", "team", "--db", str(db),
                                                   "--format", "json"]).output)
    assert by_team[0] == {"team": "research", "calls": 1, "cost_usd": 2.0, "unpriced_calls": 0,
                          "input_tokens": 10, "output_tokens": 5, "blocked": 0}
    assert by_team[1]["team"] == "support" and by_team[1]["cost_usd"] == 0.75
    assert by_team[1]["unpriced_calls"] == 1 and by_team[1]["blocked"] == 1
    by_model = CliRunner().invoke(main, ["audit", "report", "cost", "--by", "model", "--since", "7d",
                                         "--db", str(db), "--format", "csv"]).output.splitlines()
    assert by_model[0].startswith("model,calls,cost_usd") and by_model[1].startswith("claude-haiku-4-5,1,2.0")
    blocked = json.loads(CliRunner().invoke(main, ["audit", "report", "blocked", "--db", str(db),
                                                   "--format", "json"]).output)
    assert [(b["rule"], b["team"], b["calls"]) for b in blocked] == [("teams.support.models", "support", 1)]
    table = CliRunner().invoke(main, ["audit", "report", "cost", "--db", str(db)])
    assert table.exit_code == 0 and "cost by team" in table.output
    bad = CliRunner().invoke(main, ["audit", "report", "cost", "--since", "a week", "--db", str(db)])
    assert bad.exit_code == 2 and "7d, 24h, 30m" in bad.output


def test_errors_show_no_markup_and_keep_brackets(tmp_path: Path) -> None:
    """Rich markup in a plain string showed `[bold red]...[/]`; untrusted text must never be read as markup."""
    db = tmp_path / "a.duckdb"
    w = AuditWriter(AuditStore(db))
    w.start()
    w.close()
    bad = CliRunner().invoke(main, ["audit", "query", "--db", str(db), "SELECT [/] FROM requests"])
    assert bad.exit_code == 1 and "query failed: " in bad.output
    assert "[bold red]" not in bad.output and "[/] FROM" not in bad.output.split("query failed")[0]
    folder = tmp_path / "pol[icy]"
    folder.mkdir()
    (folder / "p.yaml").write_text("version: 1\nmode: strict\n")
    run = CliRunner().invoke(main, ["run", "--policy", str(folder / "p.yaml"), "--db", str(db)])
    assert run.exit_code == 1
    assert f"policy error: 1 problem(s) in {folder / 'p.yaml'}" in run.output
    assert f"{folder / 'p.yaml'}:2: mode:" in run.output and "[/]" not in run.output


def test_policy_check_json_lists_every_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nmode: strict\nmode: monitor\nclients:\n  - {name: a, team: ghost, key_sha256: x}\n")
    out = CliRunner().invoke(main, ["policy", "check", "--format", "json", str(bad)])
    assert out.exit_code == 1
    report = json.loads(out.output)
    assert report["valid"] is False
    assert [(e["line"], e["field"]) for e in report["errors"]] == [
        (2, "mode"), (3, "mode"), (5, "clients[0].key_sha256"), (5, "clients[0].team")]
    assert all(e["file"] == str(bad) and e["message"] for e in report["errors"])
    text = CliRunner().invoke(main, ["policy", "check", str(bad)])
    assert text.exit_code == 1 and len(text.output.splitlines()) == 5 and "4 error" in text.output


def run_douane(tmp_path: Path, *args: str, policy: str = "version: 1\n") -> subprocess.CompletedProcess[str]:
    """`douane run` in a process of its own; the deadline only stops a regression from hanging."""
    (tmp_path / "p.yaml").write_text(policy)
    return subprocess.run([sys.executable, "-m", "douane.cli", "run", "--policy", str(tmp_path / "p.yaml"),
                           "--listen-port", "0", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_run_explains_an_audit_store_it_cannot_open(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    done = run_douane(tmp_path, "--db", str(tmp_path / "store"), "--certs", str(tmp_path / "certs"))
    assert done.returncode == 1 and "Traceback" not in done.stderr + done.stdout, done.stderr + done.stdout
    assert "cannot start" in done.stderr and str(tmp_path / "store") in done.stderr and "--db" in done.stderr


def test_run_explains_a_damaged_ca(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    for name in ("mitmproxy-ca.pem", "mitmproxy-ca-cert.pem"):
        (certs / name).write_text("not a certificate\n")
    done = run_douane(tmp_path, "--db", str(tmp_path / "a.duckdb"), "--certs", str(certs))
    assert done.returncode == 1 and "Traceback" not in done.stderr + done.stdout, done.stderr + done.stdout
    assert "cannot start" in done.stderr and str(certs) in done.stderr and "--certs" in done.stderr


def test_run_explains_a_missing_key_without_a_traceback(tmp_path: Path) -> None:
    done = run_douane(tmp_path, "--db", str(tmp_path / "a.duckdb"), "--certs", str(tmp_path / "certs"),
                      policy="version: 1\nproviders:\n  openai:\n    api_key_env: DOUANE_TEST_NO_SUCH_KEY\n")
    assert done.returncode == 1 and "Traceback" not in done.stderr + done.stdout, done.stderr + done.stdout
    assert "providers.openai.api_key_env" in done.stderr and "DOUANE_TEST_NO_SUCH_KEY" in done.stderr


def test_table_cells_are_shown_as_stored(tmp_path: Path) -> None:
    """Audit rows hold what clients sent: `[/]` in a prompt made the table raise a MarkupError."""
    db = tmp_path / "a.duckdb"
    w = AuditWriter(AuditStore(db))
    w.start()
    w.submit(AuditRecord(id="dou_1", ts=datetime(2026, 1, 2, tzinfo=UTC), provider="openai", status=200,
                         request_body='{"prompt": "[/] and [bold]not bold"}'))
    w.close()
    table = CliRunner().invoke(main, ["audit", "query", "--db", str(db),
                                      'SELECT request_body AS "[red]body" FROM requests'])
    assert table.exit_code == 0, table.output
    assert "[/] and [bold]not bold" in table.output and "[red]body" in table.output
