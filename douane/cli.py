"""The `douane` command: run the proxy, manage the CA, check policies, query the audit store."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import dataclasses
import json
import os
import sys
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Column, Table
from rich.text import Text

from douane import __version__
from douane.policy import Policy, PolicyError, load_policy

if TYPE_CHECKING:
    from collections.abc import Callable

    from douane.audit.writer import WriterHealth
    from douane.gateway import Gateway
    from douane.runner import AdminConfig, ListenConfig

err = Console(stderr=True, soft_wrap=True)  # errors carry paths: never fold them
out = Console()

DEFAULT_POLICY = "policies/default.yaml"


def _policy_path(policy: str | None) -> str:
    return policy or os.environ.get("DOUANE_POLICY") or DEFAULT_POLICY


def _certs_path(certs: str | None) -> str:
    return certs or os.environ.get("DOUANE_CERTS") or "certs"


def _db_path(db: str | None, policy: Policy | None = None) -> str:
    return db or os.environ.get("DOUANE_DB") or (policy.audit.db if policy and policy.audit.db else None) \
        or "douane.duckdb"


def _problem(label: str, detail: object) -> None:
    """`label: detail` on stderr, the label in bold red; the detail (paths, errors) is never read as markup."""
    err.print(Text.assemble((label, "bold red"), f": {detail}"), highlight=False)


def _load_or_exit(path: str) -> Policy:
    try:
        return load_policy(path)
    except PolicyError as e:
        _problem("policy error", f"{len(e.issues)} problem(s) in {path}")
        for issue in e.issues:
            err.print(f"  {issue}", highlight=False, markup=False)
        err.print("fix the file(s) above, then check again with: douane policy check " + path, highlight=False,
                  markup=False)
        sys.exit(1)


def _cannot_start(what: str, error: object, remedy: str = "") -> NoReturn:
    """A configuration douane cannot serve: what, why and what to do, then exit 1 (never a traceback)."""
    _problem("cannot start", f"{what}: {error}" + (f"; {remedy}" if remedy else ""))
    sys.exit(1)


def _check_ca(certs_dir: str) -> None:
    """mitmproxy reads the CA only once serving starts, and a damaged one ends in its traceback: read it first."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from douane.ca import KEY_FILES

    raw = (Path(certs_dir) / KEY_FILES[0]).read_bytes()
    with contextlib.suppress(TypeError):  # an encrypted key: mitmproxy gets its passphrase from --set
        load_pem_private_key(raw, None)
    x509.load_pem_x509_certificates(raw)


def policy_summary(policy: Policy) -> str:
    clients = f"{len(policy.clients)} clients" if policy.clients is not None else "anonymous callers"
    return (f"mode {policy.mode}, fail {policy.fail}, pii {policy.pii.action} "
            f"({len(policy.pii.entities)} entities), {clients}, {len(policy.teams)} teams, "
            f"{len(policy.routes)} routes, {len(policy.fallbacks)} fallbacks, audit bodies {policy.audit.bodies}")


@click.group()
@click.version_option(package_name="douane")
def main() -> None:
    """douane: a transparent LLM gateway."""


@main.command()
@click.option("--policy", "policy_path", help="YAML file or folder [env DOUANE_POLICY; policies/default.yaml]")
@click.option("--listen-host", default="127.0.0.1", show_default=True)
@click.option("--listen-port", default=8080, show_default=True, type=int)
@click.option("--db", help="audit store [env DOUANE_DB; the policy's audit.db; ./douane.duckdb]")
@click.option("--certs", help="CA folder [env DOUANE_CERTS; certs/]")
@click.option("--set", "sets", multiple=True, metavar="OPTION=VALUE", help="a mitmproxy option")
@click.option("--grace", default=10.0, show_default=True, type=click.FloatRange(min=0),
              help="on SIGINT/SIGTERM, seconds the calls in flight get to finish")
@click.option("--mode", "proxy_mode", type=click.Choice(["regular", "transparent", "reverse"]), default="regular",
              show_default=True, help="regular: workloads set HTTPS_PROXY; transparent: the kernel redirects "
                                      "their TCP 443 to douane; reverse: workloads set their SDK's base URL to "
                                      "douane (README: Pointing a workload at douane)")
@click.option("--admin-port", type=click.IntRange(0, 65535), default=None,
              help="serve /metrics, /healthz and /readyz on this port (off by default; 0: any free port)")
@click.option("--admin-host", default="127.0.0.1", show_default=True, help="address of the admin listener")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 256),
              help="proxy processes serving the one port, one audit store (README: All cores)")
def run(policy_path: str | None, listen_host: str, listen_port: int, db: str | None, certs: str | None,
        sets: tuple[str, ...], grace: float, proxy_mode: str, admin_port: int | None, admin_host: str,
        workers: int) -> None:
    """Start the proxy in the foreground; SIGHUP reloads the policy (an invalid one is refused, the old one
    stays); SIGINT/SIGTERM stop it with every audit record written."""
    import duckdb

    from douane.ca import BUNDLE_NAME, ensure_ca, write_bundle
    from douane.gateway import ConfigError, Gateway
    from douane.ops.admin import AdminPortError
    from douane.runner import AdminConfig, ListenConfig, serve

    path = _policy_path(policy_path)
    policy = _load_or_exit(path)
    certs_dir = _certs_path(certs)
    db_path = Path(_db_path(db, policy)).absolute()
    if proxy_mode == "transparent" and policy.clients is not None:
        _cannot_start(f"--mode transparent with policy {path}",
                      "redirected connections carry no proxy credentials, so the clients it names cannot be told apart",
                      "remove `clients` from the policy for this instance, or run it in regular mode")
    _refuse_workers(workers, policy, path)
    try:
        ca = ensure_ca(certs_dir)
        _check_ca(certs_dir)
        bundle = write_bundle(certs_dir, Path(certs_dir) / BUNDLE_NAME)
    except (OSError, ValueError) as e:
        _cannot_start(f"the CA in {Path(certs_dir).absolute()}", e,
                      "pass --certs DIR (a folder douane can write: it creates the CA there), "
                      "or move the damaged files out of it")
    try:
        gw = Gateway(policy, db_path)
    except (ConfigError, ValueError) as e:  # the policy is valid, the environment cannot serve it
        _cannot_start(f"policy {path}", e)  # its messages name the key and what to do
    if proxy_mode == "reverse" and policy.clients is not None:
        keyless = [spec.name for spec in gw.providers.specs if spec.name not in gw.provider_keys]
        if keyless:
            _cannot_start(f"--mode reverse with policy {path}",
                          f"no central key for {', '.join(keyless)}: the API key a client sends is its douane key, "
                          "so douane must bring the provider's",
                          "set providers.NAME.api_key_env (or api_key_file) for each, or run without `clients`")
    try:
        gw.writer.start()
    except (OSError, duckdb.Error) as e:
        _cannot_start(f"the audit store {db_path}", e,
                      "pass --db PATH (a file douane can create and write), or set DOUANE_DB or audit.db")
    hosts = ", ".join(h for spec in gw.providers.specs for h in spec.hosts)
    creds = "CLIENT:KEY@" if policy.clients is not None else ""
    proxy_host = "127.0.0.1" if listen_host in ("0.0.0.0", "::") else listen_host
    lines = [
        f"[bold]listening[/]  http://{escape(listen_host)}:{listen_port}",
        f"[bold]policy[/]     {escape(path)}: {escape(policy_summary(policy))}",
        f"[bold]intercepts[/] {escape(hosts)} (everything else is tunnelled untouched)",
        f"[bold]audit[/]      {escape(str(db_path))}",
        f"[bold]CA[/]         {escape(str(ca))}",
    ]
    trust = [f"export SSL_CERT_FILE={bundle}", f"export REQUESTS_CA_BUNDLE={bundle}",
             f"export CURL_CA_BUNDLE={bundle}", f"export NODE_EXTRA_CA_CERTS={ca}"]
    if proxy_mode == "transparent":
        lines[0] = f"[bold]listening[/]  {escape(listen_host)}:{listen_port}, transparent: redirect the " \
                   "workloads' TCP 443 here"
        exports = "\n".join(["# workloads: redirect their TCP 443 to this address (README: Transparent mode) "
                             "and trust the CA", *trust])
    elif proxy_mode == "reverse":
        from douane.reverse import workload_lines
        lines[0] = f"[bold]listening[/]  http://{escape(listen_host)}:{listen_port}, base-URL mode"
        exports = "\n".join(["# workloads: no proxy, no CA; the SDK's base URL and API key:",
                             *workload_lines(f"http://{proxy_host}:{listen_port}", gw.providers,
                                             "CLIENT:KEY" if creds else None)])
    else:
        proxy = f"http://{creds}{proxy_host}:{listen_port}"
        exports = "\n".join([
            "# workloads: point at the proxy and trust its CA", f"export HTTPS_PROXY={proxy}", *trust,
            f"# Node's fetch, Java, .NET, Rust/Go: eval \"$(douane env CLIENT --proxy {proxy} "
            f"--certs {Path(certs_dir).absolute()})\"",
        ])

    admin = AdminConfig(admin_host, admin_port) if admin_port is not None else None

    def banner() -> None:
        if admin is not None:
            base = f"http://{escape(admin.host)}:{admin.port}"
            lines.append(f"[bold]admin[/]      {base}/metrics, /healthz, /readyz")
        # a console of its own: the error console never folds lines, which would crop the panel
        Console(stderr=True).print(Panel("\n".join(lines), title=f"douane {__version__}", expand=False),
                                   highlight=False)
        err.print(exports, highlight=False, markup=False, soft_wrap=True)
    listen = ListenConfig(listen_host, listen_port, str(Path(certs_dir).absolute()), sets, proxy_mode)
    if workers > 1:
        _run_workers(gw, listen, workers, banner, lines, grace, admin, path, db_path)
    try:
        asyncio.run(serve(gw, listen, on_ready=banner, grace=grace, admin=admin, policy_path=path))
    except ValueError as e:  # a --set mitmproxy option: a usage error, as click's are
        _problem("cannot start", e)
        sys.exit(2)
    except AdminPortError as e:  # the store is closed by `finally` on the way out
        _cannot_start("the admin listener", e, "pass another --admin-port (or --admin-host), or leave it out")
    finally:
        final = gw.writer.close()
    sys.exit(_stopped(db_path, final, len(gw.inflight)))


def _refuse_workers(workers: int, policy: Policy, path: str) -> None:
    """--workers N: what N processes cannot serve is refused before anything starts."""
    from douane.workers import WorkersRefused, refuse_split_counters

    try:
        refuse_split_counters(policy, workers, f"policy {path}")
    except WorkersRefused as e:
        _cannot_start(f"--workers {workers}", e)


def _run_workers(gw: Gateway, listen: ListenConfig, workers: int, banner: Callable[[], None], lines: list[str],
                 grace: float, admin: AdminConfig | None, path: str, db_path: Path) -> NoReturn:
    """`douane run --workers N`: this process binds the port, writes the audit and supervises N workers."""
    from douane.workers import supervise

    lines.insert(1, f"[bold]workers[/]    {workers} processes on the one port, one audit writer (this process)")
    unrecorded = 0
    try:
        unrecorded = asyncio.run(supervise(gw, listen, workers, banner, grace, admin, path))
    except OSError as e:
        gw.writer.close()
        _cannot_start(f"--workers {workers} on {listen.host}:{listen.port}", e,
                      "pass another --listen-port (or --admin-port), or stop what holds it")
    except RuntimeError as e:
        gw.writer.close()
        _cannot_start(f"--workers {workers}", e)
    final = gw.writer.close()
    if gw.tracer is not None:
        gw.tracer.close()
    sys.exit(_stopped(db_path, final, unrecorded))


def _stopped(db_path: Path, final: WriterHealth, unrecorded: int) -> int:
    """Say where every record went; exit 0 only when each call has its row in the store."""
    from rich.markup import escape

    told = [f"{final.written} audit record(s) written to {escape(str(db_path))}"]
    if final.folded:
        told.append(f"{final.folded} more from an earlier run's spill files")
    if final.quarantined:
        told.append(f"{final.quarantined} kept whole in quarantine/ (their rows say why)")
    if final.spilled:
        told.append(f"[bold red]{final.spilled} NOT written[/]: kept in {escape(', '.join(final.spill_files))}; "
                    "the next start (or douane audit doctor --repair) folds them in")
    if final.lost:
        told.append(f"[bold red]{final.lost} LOST[/]: they could be kept nowhere (their ids are in the log above)")
    if unrecorded:
        told.append(f"[bold red]{unrecorded} call(s) in flight have no audit row[/]")
    err.print("douane stopped: " + "; ".join(told), highlight=False)
    return 0 if not (final.spilled or final.lost or unrecorded) else 1


@main.command()
@click.option("--path", "show_path", is_flag=True, help="print the CA certificate path (last line)")
@click.option("--bundle", "bundle", type=click.Path(dir_okay=False), help="write system CAs + douane CA here")
@click.option("--certs", help="CA folder [env DOUANE_CERTS; certs/]")
def ca(show_path: bool, bundle: str | None, certs: str | None) -> None:
    """Create the CA if missing; print its path or write a trust bundle."""
    from douane.ca import ensure_ca, write_bundle

    certs_dir = _certs_path(certs)
    if not show_path and not bundle:
        raise click.UsageError("say --path or --bundle FILE")
    if bundle:
        written = write_bundle(certs_dir, bundle)
        err.print(f"wrote {written}: system CAs plus the douane CA", highlight=False, markup=False)
    if show_path:
        click.echo(str(ensure_ca(certs_dir)))


@main.command()
@click.option("--admin", "admin_url", help="the proxy's admin endpoint, e.g. http://127.0.0.1:9100 [env DOUANE_ADMIN]")
@click.option("--admin-port", type=click.IntRange(1, 65535), help="shorthand for --admin http://127.0.0.1:PORT")
@click.option("--interval", default=2.0, show_default=True, type=click.FloatRange(min=0.2),
              help="seconds between refreshes (the rates are over this window)")
@click.option("--once", is_flag=True, help="print one frame (rates since the proxy started) and exit")
def top(admin_url: str | None, admin_port: int | None, interval: float, once: bool) -> None:
    """A live view of a running proxy (started with --admin-port): calls/s, errors, latency, douane's
    own time, tokens and cost per team, blocks by rule, upstream health. Ctrl-C quits."""
    import signal
    import threading
    import time

    import httpx
    from rich.live import Live

    from douane.ops.top import Snapshot, build_view, render

    url = _admin_url(admin_url, admin_port)

    def scrape() -> Snapshot:
        r = httpx.get(f"{url}/metrics", timeout=max(interval, 2.0) + 3, trust_env=False)
        r.raise_for_status()
        return Snapshot.parse(r.text, time.monotonic())

    if once:
        try:
            snap = scrape()
        except httpx.HTTPError as e:
            _problem("cannot read the admin endpoint", f"{url}/metrics: {e}; is douane running with --admin-port?")
            sys.exit(1)
        out.print(render(build_view(snap, None), url))
        return
    before: Snapshot | None = None
    # Ctrl-C (or SIGTERM) ends the loop between frames: a KeyboardInterrupt raised wherever it lands
    # (inside rich's screen restore, say) would exit non-zero with the terminal half restored
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with Live(render(None, url), console=out, screen=True, auto_refresh=False) as live:
        while not stop.is_set():
            try:
                snap = scrape()
                live.update(render(build_view(snap, before), url), refresh=True)
                before = snap
            except httpx.HTTPError as e:
                live.update(render(None, url, f"cannot read {url}/metrics: {e}"), refresh=True)
            stop.wait(interval)


def _admin_url(admin_url: str | None, admin_port: int | None) -> str:
    url = (admin_url or (f"http://127.0.0.1:{admin_port}" if admin_port else None)
           or os.environ.get("DOUANE_ADMIN") or "").rstrip("/")
    if not url:
        raise click.UsageError("say which proxy: --admin-port PORT or --admin URL (start it with douane run "
                               "--admin-port PORT)")
    return url


ADMIN = click.option("--admin", "admin_url", help="the proxy's admin endpoint, e.g. http://127.0.0.1:9100 "
                     "[env DOUANE_ADMIN]")
ADMIN_PORT = click.option("--admin-port", type=click.IntRange(1, 65535),
                          help="shorthand for --admin http://127.0.0.1:PORT")


@main.group()
def anomaly() -> None:
    """Clients and teams held by anomaly detection (the policy's `anomaly:`)."""


def _admin_call(method: str, url: str) -> Any:
    import httpx

    try:
        r = httpx.request(method, url, timeout=10, trust_env=False)
    except httpx.HTTPError as e:
        _problem("cannot reach the admin endpoint", f"{url}: {e}; is douane running with --admin-port?")
        sys.exit(1)
    if r.status_code == 404 and "no such path" in r.text:
        _problem("not available", "this proxy's policy has no anomaly: section")
        sys.exit(1)
    return r


@anomaly.command("list")
@ADMIN
@ADMIN_PORT
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def anomaly_list(admin_url: str | None, admin_port: int | None, fmt: str) -> None:
    """The quarantines and throttles in force."""
    r = _admin_call("GET", _admin_url(admin_url, admin_port) + "/anomaly")
    rows = r.json()["restrictions"]
    if fmt == "json":
        click.echo(json.dumps(rows))
        return
    table = Table("scope", "name", "held", "since", "until", "why", title=f"{len(rows)} held")
    for row in rows:
        until = row.get("until")
        table.add_row(row["scope"], Text(row["name"]), "quarantined" if row["kind"] == "block" else
                      f"throttled to {row.get('calls_per_minute')}/min",
                      datetime.fromtimestamp(row["since"]).isoformat(timespec="seconds"),
                      datetime.fromtimestamp(until).isoformat(timespec="seconds") if until else "until cleared",
                      Text(row["reason"]))
    out.print(table)


@anomaly.command("clear")
@click.argument("name")
@click.option("--team", "is_team", is_flag=True, help="NAME is a team, not a client")
@ADMIN
@ADMIN_PORT
def anomaly_clear(name: str, is_team: bool, admin_url: str | None, admin_port: int | None) -> None:
    """Lift the quarantine (or throttle) of a client, or with --team of a team."""
    from urllib.parse import quote

    scope = "team" if is_team else "client"
    r = _admin_call("POST", f"{_admin_url(admin_url, admin_port)}/anomaly/clear?{scope}={quote(name, safe='')}")
    if r.status_code != 200:
        _problem("not cleared", r.json().get("error", r.text))
        sys.exit(1)
    click.echo(f"{scope} {name}: cleared")


@main.group()
def policy() -> None:
    """Policy files."""


@policy.command("check")
@click.argument("path", type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
def policy_check(path: str, fmt: str) -> None:
    """Validate a policy file or folder: exit 0 with a summary and its policy_hash, or 1 with every error."""
    try:
        loaded = load_policy(path)
    except PolicyError as e:
        if fmt == "json":
            click.echo(json.dumps({"valid": False, "errors": [vars(i) for i in e.issues]}))
        else:
            for issue in e.issues:
                click.echo(str(issue), err=True)
            click.echo(f"{path}: {len(e.issues)} error(s)", err=True)
        sys.exit(1)
    from douane.gateway import policy_digest

    digest = policy_digest(loaded)  # the `policy_hash` of every audit row this policy judges
    if fmt == "json":
        click.echo(json.dumps({"valid": True, "summary": policy_summary(loaded), "policy_hash": digest}))
    else:
        click.echo(f"{path}: valid: {policy_summary(loaded)}; policy_hash {digest}")


@policy.command("test")
@click.argument("policy_path", metavar="POLICY", type=click.Path())
@click.argument("test_files", metavar="TESTFILE...", nargs=-1, required=True, type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["table", "json", "junit"]), default="table", show_default=True)
def policy_test(policy_path: str, test_files: tuple[str, ...], fmt: str) -> None:
    """Run test cases against a policy, offline, through the proxy's own stages: exit 0 when every
    case passes, 1 otherwise (a failed case, or a policy or test file that cannot be read)."""
    from douane.policy.testing import CaseFileError, Harness, load_cases

    loaded = _load_or_exit(policy_path)
    cases = []
    for path in test_files:
        try:
            cases += load_cases(path)
        except CaseFileError as e:
            _problem("test file error", e)
            sys.exit(1)
    results = Harness(loaded).run(cases)
    failed = sum(not r.passed for r in results)
    if fmt == "json":
        click.echo(json.dumps({"policy": policy_path, "passed": len(results) - failed, "failed": failed,
                               "cases": [{"name": r.case.name, "where": r.case.where, "passed": r.passed,
                                          "failures": r.failures, "got": r.got} for r in results]}))
    elif fmt == "junit":
        click.echo(_junit(policy_path, results))
    else:
        table = Table("case", "result", "calls", title=f"douane policy test {policy_path}")
        for r in results:
            table.add_row(escape(r.case.name), "[green]pass[/]" if r.passed else "[red]FAIL[/]", str(r.case.repeat))
        out.print(table)
        for r in results:  # each failure whole, on its own line: paths and texts are never folded
            if not r.passed:
                out.print(Text.assemble(("FAIL ", "bold red"), f"{r.case.where} ({r.case.name})"), soft_wrap=True)
                for failure in r.failures:
                    out.print(f"  {failure}", soft_wrap=True, markup=False, highlight=False)
        out.print(f"{len(results) - failed} passed, {failed} failed", highlight=False)
    sys.exit(1 if failed else 0)


@policy.command("replay")
@click.option("--policy", "policy_path", help="the candidate policy, file or folder [env DOUANE_POLICY; "
              "policies/default.yaml]")
@click.option("--db", help="audit store [env DOUANE_DB; the policy's audit.db; ./douane.duckdb]")
@click.option("--since", default="7d", show_default=True, help="how far back: 30m, 24h, 7d, 2w")
@click.option("--where", "where", help="an SQL condition on the requests table, e.g. \"team = 'support'\"")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def policy_replay(policy_path: str | None, db: str | None, since: str, where: str | None, fmt: str) -> None:
    """Re-judge recorded calls under a candidate policy, offline, and report what would change."""
    from rich.progress import Progress

    from douane.policy.replay import parse_since, read_rows, replay

    policy_path = _policy_path(policy_path)
    candidate = _load_or_exit(policy_path)
    try:
        window = parse_since(since)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--since") from None
    db_path = _db_path(db, candidate)
    try:
        rows = read_rows(db_path, window, where)
    except FileNotFoundError as e:
        _problem("cannot replay", e)
        sys.exit(1)
    except Exception as e:  # duckdb's own errors: a bad --where, mostly
        _problem("cannot read the audit store", f"{e}; check --where and --db")
        sys.exit(1)
    with Progress(console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task("replaying", total=len(rows))
        report = replay(candidate, policy_path, rows, progress=lambda n: bar.update(task, completed=n))
    data = report.as_json()
    if fmt == "json":
        click.echo(json.dumps(data, default=str))
        return
    _print_replay(data)


def _print_replay(data: dict[str, Any]) -> None:
    out.print(f"replayed {data['replayed']} call(s) under {data['policy']} (policy_hash {data['policy_hash']}), "
              f"{data['calls_per_second'] or 0} calls/s; skipped: {data['skipped'] or 'none'}",
              highlight=False, markup=False, soft_wrap=True)
    table = Table("now", "team", "rule", "calls", "examples", title="decisions that would change")
    for group in data["by_rule"]:
        table.add_row(group["now"], escape(str(group["team"])), escape(group["rule"]), str(group["calls"]),
                      escape(", ".join(group["examples"])))
    out.print(table)
    if data["rerouted"]:
        routes = Table("call", "before", "after", "cost before", "cost after", title="reroutes and model changes")
        for r in data["rerouted"][:50]:
            routes.add_row(r["id"], escape(r["before"]), escape(r["after"]), str(r["before_cost_usd"]),
                           str(r["after_cost_usd"]))
        out.print(routes)
        out.print(f"estimated cost difference of the reroutes: ${data['rerouted_cost_difference_usd']}")
    out.print(f"new guard findings: {len(data['new_findings'])} call(s)", highlight=False)
    out.print("what replay cannot know:", highlight=False)
    for line in data["cannot_know"]:
        out.print(f"  - {line}", highlight=False, markup=False, soft_wrap=True)


@policy.command("schema")
def policy_schema() -> None:
    """Print the JSON Schema of a policy file, for editors that validate YAML as you type."""
    from douane.policy.schema import policy_schema as schema

    click.echo(json.dumps(schema(), indent=2))


def _junit(policy_path: str, results: list[Any]) -> str:
    """JUnit XML, one testcase per case, for CI systems that show test reports."""
    from xml.etree import ElementTree as ET

    failed = sum(not r.passed for r in results)
    suite = ET.Element("testsuite", name=f"douane policy test {policy_path}", tests=str(len(results)),
                       failures=str(failed), errors="0")
    for r in results:
        case = ET.SubElement(suite, "testcase", classname=r.case.where.split(":")[0], name=r.case.name)
        if not r.passed:
            ET.SubElement(case, "failure", message=r.failures[0]).text = "\n".join(r.failures)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True)


@main.group()
def audit() -> None:
    """The audit store."""


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def _run_sql(db: str | None, sql: str, params: list[Any] | None = None) -> tuple[list[str], list[tuple[Any, ...]]]:
    import duckdb

    from douane.audit import query

    try:
        return query(_db_path(db), sql, params)
    except FileNotFoundError as e:
        _problem("error", e)
        sys.exit(1)
    except duckdb.Error as e:
        _problem("query failed", e)
        sys.exit(1)


def _emit(columns: list[str], rows: list[tuple[Any, ...]], fmt: str, title: str | None = None) -> None:
    """Rows as a rich table for people, or JSON (one array of row objects) / CSV for scripts."""
    if fmt == "json":
        click.echo(json.dumps([{c: _jsonable(v) for c, v in zip(columns, row, strict=True)} for row in rows]))
    elif fmt == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows([_jsonable(v) for v in row] for row in rows)
    else:
        # Text, not str: rows hold what clients sent, and a `[/]` in a prompt is not markup
        table = Table(*(Column(header=Text(c)) for c in columns), title=title or f"{len(rows)} row(s)")
        for row in rows:
            table.add_row(*(Text("" if v is None else str(_jsonable(v))) for v in row))
        out.print(table)


FORMAT = click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table")
DB = click.option("--db", help="audit store [env DOUANE_DB; ./douane.duckdb]")


@audit.command("query")
@click.argument("sql")
@DB
@FORMAT
@click.option("--fleet", "fleet", type=click.Path(file_okay=False), default=None,
              help="query the whole fleet's audit in this shared folder (the policy's audit.fleet) instead of --db")
def audit_query(sql: str, db: str | None, fmt: str, fleet: str | None) -> None:
    """Run SQL against the audit store (table `requests`); works while the proxy runs."""
    if fleet is None:
        columns, rows = _run_sql(db, sql)
    else:
        columns, rows = _run_fleet_sql(fleet, sql)
    _emit(columns, rows, fmt)


def _run_fleet_sql(fleet: str, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    import duckdb

    from douane.audit.fleet import query_fleet

    try:
        return query_fleet(fleet, sql)
    except FileNotFoundError as e:
        _problem("error", e)
        sys.exit(1)
    except duckdb.Error as e:
        _problem("query failed", e)
        sys.exit(1)


@audit.command("doctor")
@DB
@click.option("--repair", is_flag=True, help="fix what can be fixed without losing a row (stop the proxy first)")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def audit_doctor(db: str | None, repair: bool, fmt: str) -> None:
    """Check the audit store (manifest, segments, spill and temp files); exit 1 while problems remain."""
    from rich.markup import escape

    from douane.audit.doctor import diagnose
    from douane.audit.doctor import repair as repair_store
    from douane.audit.store import AuditStore, StoreBusy

    store = AuditStore(_db_path(db))
    try:
        result = repair_store(store) if repair else diagnose(store)
    except StoreBusy as e:
        err.print(f"[bold red]cannot repair[/]: {escape(e.strerror or str(e))}; "
                  "run without --repair to only check", highlight=False)
        sys.exit(1)
    if fmt == "json":
        click.echo(json.dumps(result.as_dict()))
    else:
        rows = "?" if result.rows is None else str(result.rows)
        running = " (a proxy is writing to it)" if result.writer_running else ""
        out.print(f"{escape(result.db)}{running}: {rows} row(s) in {result.live_segments} live segment(s), "
                  f"{result.quarantined_files} file(s) in quarantine", highlight=False, soft_wrap=True)
        if result.problems:
            table = Table("problem", "where", "detail", "repair" if not repair else "fixed",
                          title=f"{len(result.problems)} problem(s)")
            for p in result.problems:
                table.add_row(p.kind, escape(p.path), escape(p.detail),
                              ("yes" if p.fixed else "no") if repair else escape(p.repair))
            out.print(table)
        if not result.ok and not repair:
            out.print("fix them with: douane audit doctor --repair (with the proxy stopped)", highlight=False)
    sys.exit(0 if result.ok else 1)


def _trusted_keys(keys: tuple[str, ...], policy_path: str | None) -> list[str]:
    """Public keys to check signatures against: --key files, else the signing key of the policy
    named by --policy or DOUANE_POLICY (none: signatures are only checked for consistency)."""
    from douane.audit.signing import load_public_key

    try:
        found = [load_public_key(k) for k in keys]
        policy_file = policy_path or os.environ.get("DOUANE_POLICY")
        if not found and policy_file:
            signing = _load_or_exit(policy_file).audit.signing_key_file
            if signing:
                found.append(load_public_key(signing))
    except ValueError as e:
        _problem("error", e)
        sys.exit(1)
    return found


def _store_or_exit(db: str | None, policy: Policy | None = None) -> Any:
    from douane.audit.store import AuditStore

    store = AuditStore(_db_path(db, policy))
    if not store.db_path.exists():
        _problem("error", f"no audit store at {store.db_path}: pass --db PATH (or set DOUANE_DB)")
        sys.exit(1)
    return store


@audit.command("verify")
@DB
@click.option("--key", "keys", multiple=True, metavar="PUBLIC.pem",
              help="the operator's public key (or its private key file); repeat for rotated keys")
@click.option("--policy", "policy_path", help="take the key from this policy's audit.signing_key_file "
                                              "[env DOUANE_POLICY]")
@click.option("--deep", is_flag=True, help="check every record, even in segments whose signed seal matches")
@click.option("--copy", "copies", multiple=True, type=click.Path(dir_okay=False), metavar="FILE",
              help="a copy of the trail kept elsewhere (audit.checkpoint_copy) to compare with")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def audit_verify(db: str | None, keys: tuple[str, ...], policy_path: str | None, deep: bool,
                 copies: tuple[str, ...], fmt: str) -> None:
    """Check that the audit store is what douane wrote: exit 0 when intact, 1 naming what was
    altered, removed or reordered. Works while the proxy runs."""
    from douane.audit.verify import verify_store

    trusted = _trusted_keys(keys, policy_path)
    store = _store_or_exit(db)
    try:
        result = verify_store(store, trusted, deep=deep, copies=[Path(c) for c in copies])
    except (OSError, Exception) as e:  # noqa: BLE001 - a store too damaged to open is a failed verification
        _problem("cannot verify", f"{store.db_path}: {e}")
        sys.exit(1)
    if fmt == "json":
        click.echo(json.dumps(_jsonable(result.as_dict())))
        sys.exit(0 if result.ok else 1)
    _print_verify(result)
    sys.exit(0 if result.ok else 1)


def _print_verify(result: Any) -> None:
    checked = (f"{result.sealed_segments} segment(s) taken as sealed (trusted key {result.trusted_key})"
               if result.trusted_key else "no trusted key (--key): every record checked")
    verdict = Text("intact", "bold green") if result.ok else Text("NOT INTACT", "bold red")
    out.print(Text.assemble(f"{result.db}: ", verdict, f": {result.rows} record(s) in {result.segments} segment(s); "
                            f"{checked}; {result.checked_rows} record(s) read in {result.checked_segments} "
                            f"segment(s); {result.checkpoints} checkpoint(s); {len(result.tombstones)} tombstone(s); "
                            f"{result.seconds:.2f} s"), highlight=False, soft_wrap=True)
    for inst, chain in sorted(result.instances.items()):
        removed = f"seq 1..{chain['removed_through']} removed by a purge" if chain["removed_through"] else ""
        held = f"seq {chain['first']}..{chain['last']}" if chain["last"] >= chain["first"] else "no records left"
        out.print(Text(f"  instance {inst}: {held}" + (f" ({removed})" if removed else "")), highlight=False)
    if result.tombstones:
        table = Table("n", "what", "when", "why", "by", "records", title="tombstones: what was removed, when and why")
        for t in result.tombstones:
            table.add_row(str(t.get("n")), Text(str(t.get("type"))), Text(str(t.get("at"))),
                          Text(str(t.get("reason") or "")), Text(str(t.get("by") or "")), str(t.get("records") or 0))
        out.print(table)
    if result.findings:
        table = Table("", "finding", "where", "detail", title=f"{len(result.findings)} finding(s)")
        for f in result.findings:
            table.add_row(Text("FAIL" if f.severity == "fail" else "warn",
                               "bold red" if f.severity == "fail" else "yellow"),
                          Text(f.kind), Text(f.where), Text(f.detail))
        out.print(table)


def _writer_policy(policy_path: str | None) -> Policy | None:
    """The policy whose audit settings (the signing key) a `douane audit` command uses when it must
    run a writer itself: --policy, DOUANE_POLICY, or the default policy when it exists."""
    path = policy_path or os.environ.get("DOUANE_POLICY") or (DEFAULT_POLICY if Path(DEFAULT_POLICY).exists()
                                                              else None)
    return _load_or_exit(path) if path else None


def _run_job(store: Any, job: Any, policy: Policy | None, wait: float) -> dict[str, Any]:
    """Hand a job to the store's writer (the running proxy's, or one started here) and wait for it."""
    from douane.audit import AuditWriter, StoreBusy
    from douane.audit.jobs import submit, wait_result
    from douane.audit.settings import AuditSettings, Retention
    from douane.gateway import ConfigError, audit_settings

    submit(store, job)
    writer = None
    if not store.writer_running():
        try:
            settings = audit_settings(policy) if policy else AuditSettings()
        except ConfigError as e:
            _problem("error", e)
            sys.exit(1)
        # the proxy's own expiry is its business: this writer only runs the job
        writer = AuditWriter(store, settings=dataclasses.replace(settings, retention=Retention()))
        try:
            writer.start()
        except StoreBusy:
            writer = None  # a proxy started meanwhile: it runs the job
        except OSError as e:
            _problem("error", f"cannot open the audit store {store.db_path}: {e}")
            sys.exit(1)
    try:
        result = wait_result(store, job.name, wait)
    finally:
        if writer is not None:
            writer.close()
    if result is None:
        _problem("not finished", f"job {job.name} did not finish within {wait:g} s; it stays queued in "
                                 f"{store.segments / 'jobs'} and runs when the store's writer can (check with: "
                                 f"douane audit verify)")
        sys.exit(1)
    return result


def _requester(by: str | None) -> str:
    import getpass
    import socket

    if by:
        return by
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _print_job(result: dict[str, Any], fmt: str, what: str) -> None:
    if fmt == "json":
        click.echo(json.dumps(result))
    elif result.get("ok"):
        tomb = f", tombstone #{result['tombstone']} in the trail" if result.get("tombstone") else ""
        out.print(Text(f"{what}: {result.get('records', 0)} record(s) in {result.get('segments', 0)} segment(s)"
                       f"{tomb}; the replaced files are deleted once no reader is connected"), highlight=False)
    else:
        _problem("failed", result.get("error", "unknown error"))
    sys.exit(0 if result.get("ok") else 1)


JOB_OPTIONS = [
    click.option("--reason", help="why (kept in the tombstone)"),
    click.option("--by", help="on whose request (kept in the tombstone) [user@host]"),
    click.option("--dry-run", is_flag=True, help="say how many calls it would change, change nothing"),
    click.option("--wait", default=120.0, show_default=True, type=click.FloatRange(min=0),
                 help="seconds to wait for the store's writer to finish"),
    click.option("--policy", "policy_path", help="the signing key when no proxy runs [env DOUANE_POLICY; "
                                                 "policies/default.yaml when present]"),
    click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table"),
]


def _job_options(fn: Any) -> Any:
    for option in reversed(JOB_OPTIONS):
        fn = option(fn)
    return fn


@audit.command("erase")
@DB
@click.option("--client", help="erase the bodies of every call of this client")
@click.option("--where", "where_sql", metavar="SQL", help="erase the bodies of the calls this condition on "
                                                          "`requests` selects")
@_job_options
def audit_erase(db: str | None, client: str | None, where_sql: str | None, reason: str | None, by: str | None,
                dry_run: bool, wait: float, policy_path: str | None, fmt: str) -> None:
    """Erase the bodies of chosen calls (a data-subject request); their rows stay, with a tombstone
    in the trail saying what was erased, when, why and for whom, so verify still passes."""
    from douane.audit.jobs import Job, new_job_name

    if (client is None) == (where_sql is None):
        raise click.UsageError("say --client NAME or --where SQL")
    policy = _writer_policy(policy_path)
    store = _store_or_exit(db, policy)
    bodies = "(request_body IS NOT NULL OR response_body IS NOT NULL)"
    if client is not None:
        condition, params, selector = "client = ?", [client], f"client = {client!r}"
    else:
        condition, params, selector = f"({where_sql})", [], f"where {where_sql}"
    if dry_run:
        _, rows = _run_sql(str(store.db_path), f"SELECT count(*) FROM requests WHERE {bodies} AND {condition}", params)
        click.echo(f"{rows[0][0]} call(s) with bodies match; nothing was changed (--dry-run)")
        return
    ids = None
    if where_sql is not None:  # evaluated here, with the rights of whoever runs it: the writer gets ids
        ids = [r[0] for r in _run_sql(str(store.db_path), f"SELECT DISTINCT id FROM requests WHERE {bodies} AND "
                                                      f"{condition}")[1]]
    job = Job(new_job_name("erase"), "erase", reason=reason or "erasure requested (douane audit erase)",
              by=_requester(by), selector=selector, client=client, ids=ids)
    _print_job(_run_job(store, job, policy, wait), fmt, "erased the bodies")


@audit.command("purge")
@DB
@click.option("--bodies-days", type=click.FloatRange(min=0, min_open=True),
              help="erase bodies older than this [the policy's audit.retention_days.bodies]")
@click.option("--rows-days", type=click.FloatRange(min=0, min_open=True),
              help="remove calls older than this [the policy's audit.retention_days.rows]")
@_job_options
def audit_purge(db: str | None, bodies_days: float | None, rows_days: float | None, reason: str | None,
                by: str | None, dry_run: bool, wait: float, policy_path: str | None, fmt: str) -> None:
    """Remove what has expired: bodies, then whole calls, past their retention; a tombstone in the
    trail says what went, so verify still passes. The proxy does the same every hour."""
    from datetime import UTC, datetime, timedelta

    from douane.audit.jobs import Job, new_job_name

    policy = _writer_policy(policy_path)
    if policy is not None:
        bodies_days = bodies_days or policy.audit.retention_days.bodies
        rows_days = rows_days or policy.audit.retention_days.rows
    if bodies_days is None and rows_days is None:
        raise click.UsageError("nothing expires: give --bodies-days and/or --rows-days, or set "
                               "audit.retention_days in the policy")
    store = _store_or_exit(db, policy)
    now = datetime.now(UTC)
    bodies_before = (now - timedelta(days=bodies_days)).isoformat() if bodies_days else None
    rows_before = (now - timedelta(days=rows_days)).isoformat() if rows_days else None
    said = [f"{what} older than {days:g} days" for what, days in (("bodies", bodies_days), ("rows", rows_days)) if days]
    if dry_run:
        _, rows = _run_sql(str(store.db_path),
                           "SELECT count(*) FILTER (WHERE ts < ?::TIMESTAMPTZ AND (request_body IS NOT NULL OR "
                           "response_body IS NOT NULL)), count(*) FILTER (WHERE ts < ?::TIMESTAMPTZ) FROM requests",
                           [bodies_before, rows_before])
        click.echo(f"{rows[0][0]} call(s) with expired bodies, {rows[0][1]} expired call(s); nothing was changed "
                   f"(--dry-run)")
        return
    job = Job(new_job_name("purge"), "purge", reason=reason or "retention: " + " and ".join(said),
              by=_requester(by), selector=", ".join(said), bodies_before=bodies_before, rows_before=rows_before)
    _print_job(_run_job(store, job, policy, wait), fmt, "purged")


def _time_bound(value: str, option: str) -> tuple[str, list[Any]]:
    """`7d` / `24h` / `30m` (before now), or an ISO date or time -> SQL over ts and its parameters."""
    import re
    from datetime import datetime

    if re.fullmatch(r"\s*\d+\s*[dhm]\s*", value):
        return f"now() - INTERVAL '{_since(value)}'", []
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter("use 7d, 24h, 30m, or an ISO date or time such as 2025-01-31 or "
                                 "2025-01-31T12:00:00+00:00", param_hint=option) from None
    return "?::TIMESTAMPTZ", [value]


@audit.command("export")
@DB
@click.option("--since", required=True, help="from: 7d, 24h, 30m, or an ISO date or time")
@click.option("--until", help="to (excluded): the same forms [now]")
@click.option("--format", "fmt", type=click.Choice(["parquet", "jsonl"]), required=True)
@click.option("--out", "out_path", type=click.Path(dir_okay=False), help="the file to write [audit-export.FORMAT]")
def audit_export(db: str | None, since: str, until: str | None, fmt: str, out_path: str | None) -> None:
    """Write a slice of the audit for an auditor (chain columns included; works while the proxy runs)."""
    import duckdb

    from douane.audit.export import export

    store = _store_or_exit(db)
    low, params = _time_bound(since, "--since")
    where = f"ts >= {low}"
    if until:
        high, more = _time_bound(until, "--until")
        where, params = f"{where} AND ts < {high}", params + more
    out_file = Path(out_path or f"audit-export.{fmt}")
    try:
        done = export(store, out_file, fmt, where, params)
    except (OSError, duckdb.Error) as e:
        _problem("export failed", e)
        sys.exit(1)
    err.print(Text(f"wrote {done.rows} call(s) to {done.path} ({fmt})"), highlight=False)
    click.echo(str(out_file.absolute()))


@audit.group()
def report() -> None:
    """Ready-made reports over the audit store."""


def _since(value: str) -> str:
    """`7d`, `24h`, `30m` -> a DuckDB interval literal."""
    import re

    m = re.fullmatch(r"(\d+)\s*([dhm])", value.strip())
    if not m:
        raise click.BadParameter("use a number and d, h or m, e.g. 7d, 24h, 30m")
    return f"{m.group(1)} {dict(d='days', h='hours', m='minutes')[m.group(2)]}"


SINCE = click.option("--since", default="30d", show_default=True, help="how far back: 7d, 24h, 30m")


@report.command("cost")
@click.option("--by", "by", type=click.Choice(["team", "client", "model", "provider"]), default="team",
              show_default=True)
@SINCE
@DB
@FORMAT
def report_cost(by: str, since: str, db: str | None, fmt: str) -> None:
    """Spend and tokens per team, client, model or provider. Unpriced calls are counted apart."""
    interval = _since(since)
    sql = f"""
        SELECT coalesce({by}, '(none)') AS {by}, count(*) AS calls,
               round(sum(cost_usd), 6) AS cost_usd,
               count(*) FILTER (WHERE cost_usd IS NULL AND status < 400) AS unpriced_calls,
               sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
               count(*) FILTER (WHERE decision = 'blocked') AS blocked
        FROM requests WHERE ts >= now() - INTERVAL '{interval}' AND provider <> 'shadow'
        GROUP BY 1 ORDER BY cost_usd DESC NULLS LAST, calls DESC"""
    columns, rows = _run_sql(db, sql)
    _emit(columns, rows, fmt, f"cost by {by}, last {since}")


@report.command("blocked")
@SINCE
@DB
@FORMAT
def report_blocked(since: str, db: str | None, fmt: str) -> None:
    """Blocked calls by rule, team and client."""
    sql = f"""
        SELECT reason AS rule, coalesce(team, '(none)') AS team, client, count(*) AS calls,
               max(ts) AS last_seen, any_value(status) AS status
        FROM requests WHERE decision = 'blocked' AND ts >= now() - INTERVAL '{_since(since)}'
        GROUP BY ALL ORDER BY calls DESC, last_seen DESC"""
    columns, rows = _run_sql(db, sql)
    _emit(columns, rows, fmt, f"blocked calls, last {since}")


@report.command("tools")
@SINCE
@DB
@FORMAT
def report_tools(since: str, db: str | None, fmt: str) -> None:
    """Tool calls per tool: how often the model asked for it, how often douane blocked it, and by whom."""
    sql = f"""
        SELECT coalesce(tool, '(unnamed)') AS tool,
               count(*) FILTER (WHERE direction = 'call') AS calls,
               count(*) FILTER (WHERE direction = 'call' AND decision = 'blocked') AS blocked,
               count(*) FILTER (WHERE decision = 'monitored') AS monitored,
               count(*) FILTER (WHERE direction = 'history' AND decision = 'blocked') AS history_refused,
               count(*) FILTER (WHERE direction = 'result' AND decision <> 'allowed') AS results_flagged,
               count(*) FILTER (WHERE direction = 'definition') AS offered,
               count(*) FILTER (WHERE decision = 'stripped') AS stripped,
               string_agg(DISTINCT coalesce(team, '(none)'), ', ' ORDER BY coalesce(team, '(none)')) AS teams,
               string_agg(DISTINCT rule, ', ' ORDER BY rule) AS rules
        FROM tool_calls WHERE ts >= now() - INTERVAL '{_since(since)}'
        GROUP BY 1 ORDER BY calls DESC, blocked DESC, tool"""
    columns, rows = _run_sql(db, sql)
    _emit(columns, rows, fmt, f"tool calls, last {since}")


def _insight_query(db: str | None) -> Any:
    return lambda sql, params: _run_sql(db, sql, params)


@report.command("duplicates")
@SINCE
@DB
@FORMAT
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1))
def report_duplicates(since: str, db: str | None, fmt: str, limit: int) -> None:
    """Prompt texts sent again to the same model (case and spacing aside), per team, and what the
    repeats cost."""
    from douane.ops.insight import duplicates

    columns, rows = duplicates(_insight_query(db), _since(since), limit)
    _emit(columns, rows, fmt, f"duplicated requests, last {since}")


@report.command("patterns")
@SINCE
@DB
@FORMAT
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1), help="patterns per team")
@click.option("--min-calls", default=2, show_default=True, type=click.IntRange(min=1))
def report_patterns(since: str, db: str | None, fmt: str, limit: int, min_calls: int) -> None:
    """Recurring prompt templates per team (redacted prompts clustered by MinHash), with calls and cost."""
    from douane.ops.insight import patterns, templates

    found = patterns(templates(_insight_query(db), _since(since)), min_calls)
    per_team: dict[str, int] = {}
    rows = []
    for p in found:
        per_team[p.team] = per_team.get(p.team, 0) + 1
        if per_team[p.team] <= limit:
            rows.append((p.team, p.calls, round(p.cost, 6), p.variants, p.template[:300]))
    _emit(["team", "calls", "cost_usd", "variants", "template"], rows, fmt, f"prompt patterns, last {since}")


@report.command("savings")
@SINCE
@DB
@FORMAT
@click.option("--policy", "policy_path", help="whose team allow-lists bound the cheaper models [env DOUANE_POLICY; "
              "policies/default.yaml when present]")
@click.option("--max-input-tokens", default=2000, show_default=True, type=click.IntRange(min=0),
              help="a call's prompt at most this long counts as small")
@click.option("--max-output-tokens", default=500, show_default=True, type=click.IntRange(min=0),
              help="a call's answer at most this long counts as short")
@click.option("--to", "to_models", multiple=True, metavar="MODEL",
              help="cheaper models to consider (default: each provider's small models)")
def report_savings(since: str, db: str | None, fmt: str, policy_path: str | None, max_input_tokens: int,
                   max_output_tokens: int, to_models: tuple[str, ...]) -> None:
    """Calls with small prompts and short answers that a cheaper model the team may use could have
    served, and the estimated saving (priced with genai-prices and the policy's prices)."""
    from douane.meter.pricing import Pricer
    from douane.ops.insight import CHEAPER, savings

    path = _policy_path(policy_path)
    policy = _load_or_exit(path) if policy_path or Path(path).exists() else None
    ladder = {provider: list(to_models) for provider in CHEAPER} if to_models else None
    if to_models and policy is not None:
        ladder = {name: list(to_models) for name in {*CHEAPER, *policy.providers}}
    found = savings(_insight_query(db), _since(since), Pricer(policy.prices if policy else None), policy,
                    max_input_tokens, max_output_tokens, ladder)
    rows = [(s.team, s.provider, s.model, s.calls, round(s.cost, 6), s.cheaper, round(s.cheaper_cost, 6),
             round(s.saving, 6)) for s in found]
    _emit(["team", "provider", "model", "calls", "cost_usd", "cheaper_model", "cheaper_cost_usd", "saving_usd"],
          rows, fmt, f"what cheaper models would have cost, last {since}")


@report.command("html")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="the page to write")
@SINCE
@DB
def report_html(out_path: str, since: str, db: str | None) -> None:
    """One self-contained page (no script, nothing loaded from anywhere): cost over time by team,
    latency distribution, blocks by rule, top prompt patterns."""
    from douane.ops.html_report import gather, render

    page = render(gather(_insight_query(db), _since(since), since), _db_path(db))
    target = Path(out_path)
    tmp = target.with_name(target.name + ".tmp")
    try:
        tmp.write_text(page, encoding="utf-8")
        tmp.replace(target)
    except OSError as e:
        _problem("cannot write the report", f"{target}: {e.strerror or e}")
        sys.exit(1)
    err.print(f"wrote {target.absolute()}", highlight=False, markup=False)


@main.command("env")
@click.argument("clients", nargs=-1, metavar="[CLIENT]...")
@click.option("--proxy", default="http://127.0.0.1:8080", show_default=True,
              help="douane's address as the workload reaches it; http://CLIENT:KEY@HOST:PORT when the policy "
                   "names clients")
@click.option("--certs", help="CA folder [env DOUANE_CERTS; certs/]")
@click.option("--truststore", type=click.Path(dir_okay=False),
              help="where the Java lines make their truststore [CERTS/douane-truststore.p12]")
@click.option("--format", "fmt", type=click.Choice(["shell", "json"]), default="shell", show_default=True)
def env_command(clients: tuple[str, ...], proxy: str, certs: str | None, truststore: str | None, fmt: str) -> None:
    """Print the lines that send a workload's LLM calls through douane, for CLIENT (python, curl, node,
    rust, go, java, dotnet; all when none is named): eval "$(douane env node)"."""
    from douane.ca import BUNDLE_NAME, ensure_ca, write_bundle
    from douane.env import CLIENTS, TRUSTSTORE_NAME, EnvError, Trust, as_json, proxy_recipes, render_shell

    certs_dir = Path(_certs_path(certs)).absolute()
    try:
        ca_cert = ensure_ca(certs_dir)
        bundle = write_bundle(certs_dir, certs_dir / BUNDLE_NAME)
    except (OSError, ValueError) as e:
        _problem("error", f"the CA in {certs_dir}: {e}; pass --certs DIR (a folder douane can write)")
        sys.exit(1)
    trust = Trust(ca_cert, bundle, Path(truststore).absolute() if truststore else certs_dir / TRUSTSTORE_NAME)
    try:
        recipes = proxy_recipes(list(clients or CLIENTS), proxy, trust)
    except EnvError as e:
        raise click.UsageError(str(e)) from None
    if fmt == "json":
        click.echo(json.dumps(as_json(recipes, proxy)))
    else:
        click.echo(render_shell(recipes, proxy), nl=False)


if __name__ == "__main__":
    main()
