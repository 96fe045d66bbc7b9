"""Chaos for the audit store: a real `douane run` under load, hurt in turn, restarted, counted.

Concurrent clients send chat calls through the proxy to the mock provider while the proxy is, in
turn: SIGKILLed, SIGTERMed, starved of disk (a small tmpfs filled, then freed), and has a segment
truncated and its manifest broken. After each, the proxy is restarted and every call a client saw
completed (it got an answer with an `x-douane-request-id`) is looked up in the `requests` view:
"lost" is a completed call without a row. Targets: none lost to SIGTERM or to a full disk once
space returns; to SIGKILL, only calls of the last flush interval. Writes its table to
BENCHMARKS.md (`--no-write` to skip). The disk scenario needs root (mount); without it, skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from douane.audit import query  # noqa: E402
from tests.adversarial.audit_load import Load  # noqa: E402

FLUSH_INTERVAL = 0.25  # AuditWriter.min_interval


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log else ""
            raise SystemExit(f"{what} exited with {proc.returncode}\n{tail}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not listen on {port}")


@dataclass
class Outcome:
    scenario: str
    completed: int
    lost: int
    target: str
    met: bool | None
    note: str


class Proxy:
    """One audit store, served by successive `douane run` processes."""

    def __init__(self, work: Path, db: Path, mock: str):
        self.work, self.db = work, db
        self.port = free_port()
        self.certs = work / "certs"
        self.policy = work / "policy.yaml"
        self.policy.write_text(yaml.safe_dump({"version": 1, "providers": {
            name: {"upstream": mock} for name in ("openai", "anthropic", "gemini")}}))
        self.log = work / "douane.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def bundle(self) -> str:
        return str(self.certs / "douane-ca-bundle.pem")

    def start(self) -> None:
        self.runs += 1
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(self.work / "tmp")}
        (self.work / "tmp").mkdir(exist_ok=True)
        with open(self.log, "ab") as fh:
            fh.write(f"\n===== run {self.runs}\n".encode())
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "douane.cli", "run", "--policy", str(self.policy), "--listen-port",
                 str(self.port), "--db", str(self.db), "--certs", str(self.certs)],
                cwd=self.work, env=env, stdout=fh, stderr=subprocess.STDOUT)
        wait_port(self.port, self.proc, "douane run", self.log)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(60)

    def ids(self) -> set[str]:
        return {r[0] for r in query(self.db, "SELECT id FROM requests")[1]}

    def run_log(self) -> str:
        return self.log.read_text(errors="replace").rsplit("===== run", 1)[-1]


def under_load(proxy: Proxy, args: argparse.Namespace, during: Callable[[Load], None] | None = None) -> Load:
    """Clients calling through the proxy until they have completed `args.calls` calls; `during`
    then runs with the load still on."""
    load = Load(proxy.url, proxy.bundle, clients=args.clients).start()
    wait_for_calls(load, args.calls)
    if during is not None:
        during(load)
    return load


def wait_for_calls(load: Load, more: int, timeout: float = 120) -> None:
    target = load.count() + more
    deadline = time.monotonic() + timeout
    while load.count() < target:
        if time.monotonic() > deadline:
            raise SystemExit(f"the clients completed {load.count()} calls in {timeout:g} s, not {target}: "
                             f"{load.failures[-3:]}")
        time.sleep(0.05)


def lost_after_restart(proxy: Proxy, load: Load) -> list[str]:
    proxy.start()
    stored = proxy.ids()
    return [rid for rid in load.completed if rid not in stored]


def sigkill(proxy: Proxy, args: argparse.Namespace) -> Outcome:
    load = under_load(proxy, args)
    killed_at = time.monotonic()
    proxy.stop(signal.SIGKILL)
    load.finish()
    lost = lost_after_restart(proxy, load)
    ages = [killed_at - load.completed[r] for r in lost]
    last_interval = sum(1 for t in load.completed.values() if killed_at - t <= FLUSH_INTERVAL)
    oldest = max(ages, default=0.0)
    return Outcome("SIGKILL", len(load.completed), len(lost), "only calls of the last flush interval (250 ms)",
                   oldest <= FLUSH_INTERVAL,
                   f"{last_interval} calls completed in the last {FLUSH_INTERVAL * 1000:.0f} ms before the kill; "
                   f"the oldest call without a row completed {oldest * 1000:.0f} ms before it")


def sigterm(proxy: Proxy, args: argparse.Namespace) -> Outcome:
    load = under_load(proxy, args)
    code = proxy.stop(signal.SIGTERM)
    load.finish()
    said = [line.split(": ", 1)[1].split(" to /")[0] for line in proxy.run_log().splitlines()
            if line.startswith("douane stopped")]
    lost = lost_after_restart(proxy, load)
    return Outcome("SIGTERM", len(load.completed), len(lost), "0", not lost and code == 0,
                   f"exit {code}; it said: {said[-1] if said else 'nothing'}")


def disk_full(proxy: Proxy, args: argparse.Namespace) -> Outcome:
    if not args.disk:
        return Outcome("disk full, then freed", 0, 0, "0", None, "skipped: mounting a tmpfs needs root")
    filler = proxy.db.parent / "filler"
    served: dict[str, int] = {}

    def starve(load: Load) -> None:
        fill(filler)
        before = load.count()
        wait_for_calls(load, args.calls)
        served["while full"] = load.count() - before
        filler.unlink()
        wait_for_calls(load, args.calls // 2)

    load = under_load(proxy, args, starve)
    load.finish()
    freed_at = time.monotonic()
    deadline = freed_at + 60
    while not set(load.completed) <= proxy.ids() and time.monotonic() < deadline:
        time.sleep(0.1)
    caught_up = time.monotonic() - freed_at
    code = proxy.stop(signal.SIGTERM)
    log = proxy.run_log()
    lost = lost_after_restart(proxy, load)
    return Outcome("disk full, then freed", len(load.completed), len(lost), "0", not lost and code == 0,
                   f"{served['while full']} calls served while the disk was full; every row in the store "
                   f"{caught_up:.1f} s after the calls stopped; exit {code}; "
                   f"log: {log.count('wait in memory; calls are still served')} error line, "
                   f"{log.count('audit: still failing')} reminder(s), {log.count('audit: writing works again')} "
                   f"recovery line")


def fill(filler: Path) -> None:
    with open(filler, "ab", buffering=0) as fh:
        for size in (1 << 20, 4096, 1):
            try:
                while fh.write(b"\0" * size):
                    pass
            except OSError:
                pass


def truncated_segment(proxy: Proxy, args: argparse.Namespace) -> Outcome:
    held: dict[str, object] = {}

    def truncate(load: Load) -> None:
        segments = Path(str(proxy.db) + ".segments")
        manifest = json.loads((segments / "manifest.json").read_text())
        newest = [n for n, lvl in zip(manifest["live"], manifest["level"], strict=True) if lvl == 0][-1]
        held["rows"] = duckdb.connect().execute(
            f"SELECT count(*) FROM read_parquet('{segments / newest}')").fetchone()[0]  # type: ignore[index]
        data = (segments / newest).read_bytes()
        (segments / newest).write_bytes(data[: len(data) // 2])
        held["name"] = newest
        wait_for_calls(load, args.calls // 2)

    load = under_load(proxy, args, truncate)
    code = proxy.stop(signal.SIGTERM)
    load.finish()
    lost = lost_after_restart(proxy, load)
    quarantined = (Path(str(proxy.db) + ".segments") / "quarantine" / str(held["name"])).exists()
    return Outcome("a segment truncated", len(load.completed), len(lost),
                   "only the truncated segment's rows", len(lost) <= int(held["rows"]),  # type: ignore[call-overload]
                   f"the newest segment ({held['rows']} rows) cut in half under load; exit {code}; "
                   f"{'quarantined at restart' if quarantined else 'NOT quarantined'}")


def broken_manifest(proxy: Proxy, args: argparse.Namespace) -> Outcome:
    def smash(load: Load) -> None:
        (Path(str(proxy.db) + ".segments") / "manifest.json").write_text("{")
        wait_for_calls(load, args.calls // 2)

    load = under_load(proxy, args, smash)
    code = proxy.stop(signal.SIGTERM)
    load.finish()
    lost = lost_after_restart(proxy, load)
    return Outcome("manifest broken", len(load.completed), len(lost), "0", not lost and code == 0,
                   f"manifest.json overwritten with '{{' under load; exit {code}")


SCENARIOS = [sigkill, sigterm, disk_full, truncated_segment, broken_manifest]


def run(args: argparse.Namespace) -> list[Outcome]:
    work = Path(tempfile.mkdtemp(prefix="douane-chaos-"))
    disk = work / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)],
                             capture_output=True).returncode == 0
    args.disk = mounted
    mock_port = free_port()
    mock = subprocess.Popen([sys.executable, str(ROOT / "tests" / "mock_provider.py"), "--port", str(mock_port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # resets when douane dies
    proxy = Proxy(work, disk / "audit.duckdb", f"http://127.0.0.1:{mock_port}")
    outcomes = []
    try:
        wait_port(mock_port, mock, "the mock provider")
        proxy.start()
        warm = Load(proxy.url, proxy.bundle, clients=args.clients).start()  # first calls are slow: not measured
        wait_for_calls(warm, 50)
        warm.finish()
        for scenario in SCENARIOS:
            outcome = scenario(proxy, args)
            print(f"{outcome.scenario}: {outcome.completed} completed, {outcome.lost} lost; {outcome.note}",
                  flush=True)
            outcomes.append(outcome)
        final = proxy.stop(signal.SIGTERM)
        traces = proxy.log.read_text(errors="replace").count("Traceback")
        print(f"last stop: exit {final}; tracebacks in the logs: {traces}; logs in {proxy.log}")
    finally:
        if proxy.proc is not None and proxy.proc.poll() is None:
            proxy.proc.kill()
        mock.terminate()
        mock.wait(10)
        if mounted:
            subprocess.run(["umount", "-l", str(disk)], check=False)
    return outcomes


def table(outcomes: list[Outcome], args: argparse.Namespace) -> str:
    rows = ["| scenario | calls completed | without a row | target | met | what happened |",
            "| --- | ---: | ---: | --- | --- | --- |"]
    for o in outcomes:
        met = "n/a" if o.met is None else ("yes" if o.met else "NO")
        rows.append(f"| {o.scenario} | {o.completed} | {o.lost} | {o.target} | {met} | {o.note} |")
    return (f"## scripts/chaos (the audit store under failure)\n\nRun {time.strftime('%Y-%m-%d')}, "
            f"{os.cpu_count()} cores: one `douane run` (default policy, mock provider) and one audit store "
            f"on a 64 MB tmpfs, {args.clients} concurrent clients with keep-alive completing {args.calls} calls "
            f"before each blow, scenarios in turn; after each the proxy is restarted and every call a client saw "
            f"completed is looked up by request id.\n\n" + "\n".join(rows) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=400, help="calls the clients complete before each blow")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--no-write", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    args = ap.parse_args()
    outcomes = run(args)
    report = table(outcomes, args)
    print(report)
    if not args.no_write:
        sys.path.insert(0, str(Path(__file__).parent))
        from benchmarks_md import write_section

        print(f"wrote {write_section('chaos', report)}")
    if any(o.met is False for o in outcomes):
        sys.exit(1)


if __name__ == "__main__":
    main()
