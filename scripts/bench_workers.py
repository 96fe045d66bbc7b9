"""Benchmark: `douane run --workers N` throughput at concurrency 64, against N times one worker.

For each N in --workers (default 1,2), one douane (default policy: PII redact on ~2 KB prompts with
fresh PII per request) in front of the same mock upstream. Rounds are interleaved (N=1, N=2, N=1,
...) so a machine's drift lands on every N alike; each figure is the median over the rounds. The
load comes from --load-procs processes (asyncio + httpx, keep-alive, concurrency split among them):
on a small host they compete with the workers and the mock for the same cores, which the section
says. Goal (issue 15): requests/s with N workers >= 0.8 x N x one worker's, up to the core count.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml
from bench import ROOT, URL, VENV_BIN, free_port, payload, wait_port

GOAL = 0.8


async def load(proxy: str, verify: ssl.SSLContext, seconds: float, concurrency: int) -> tuple[float, int]:
    """Answered requests/s over `seconds`, `concurrency` at a time on keep-alive connections; and
    how many were not answered 200 (counted, not fatal: a loaded mock upstream drops some)."""
    rng = random.Random(99)
    bodies = [payload(rng, i) for i in range(500)]
    ok = failed = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(proxy=proxy, verify=verify, trust_env=False, timeout=60, limits=limits) as client:
        start = time.perf_counter()
        deadline = start + seconds

        async def caller(k: int) -> None:
            nonlocal ok, failed
            i = k
            while time.perf_counter() < deadline:
                try:
                    r = await client.post(URL, json=bodies[i % len(bodies)])
                    ok, failed = (ok + 1, failed) if r.status_code == 200 else (ok, failed + 1)
                except httpx.HTTPError:
                    failed += 1
                i += concurrency

        await asyncio.gather(*(caller(k) for k in range(concurrency)))
        return ok / (time.perf_counter() - start), failed


def load_process(proxy: str, bundle: str, seconds: float, concurrency: int, out: multiprocessing.Queue) -> None:
    verify = ssl.create_default_context(cafile=bundle)
    out.put(asyncio.run(load(proxy, verify, seconds, concurrency)))


def measure(proxy: str, bundle: str, seconds: float, concurrency: int, procs: int) -> tuple[float, int]:
    """Requests/s through `proxy`, `concurrency` calls at a time from `procs` load processes; failures."""
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue = ctx.Queue()
    shares = [concurrency // procs + (i < concurrency % procs) for i in range(procs)]
    workers = [ctx.Process(target=load_process, args=(proxy, bundle, seconds, share, out)) for share in shares]
    for w in workers:
        w.start()
    results = [out.get(timeout=seconds + 180) for _ in workers]
    for w in workers:
        w.join(30)
    return sum(rps for rps, _ in results), sum(failed for _, failed in results)


def start(policy_file: Path, tmp: Path, certs: Path, env: dict[str, str], workers: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = open(tmp / f"douane-{workers}.log", "wb")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen([VENV_BIN / "douane", "run", "--policy", policy_file, "--listen-port", str(port),
                             "--db", tmp / f"bench-{workers}.duckdb", "--certs", certs, "--workers", str(workers)],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    wait_port(port, proc, f"douane --workers {workers}")
    ready = f"worker {workers} of {workers} ready" if workers > 1 else "listening"
    deadline = time.monotonic() + 180
    while ready not in (tmp / f"douane-{workers}.log").read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"douane --workers {workers} did not start: see {tmp}/douane-{workers}.log")
        time.sleep(0.1)
    return proc, f"http://127.0.0.1:{port}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts; 1 is always measured")
    ap.add_argument("--seconds", type=float, default=8.0, help="per measurement")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; figures are medians")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--load-procs", type=int, default=max(1, (os.cpu_count() or 2) // 4),
                    help="load-generator processes (default: a quarter of the cores, at least 1)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    args.load_before = os.getloadavg()[0]  # what else the host was doing: said in the section
    counts = sorted({1, *(int(n) for n in args.workers.split(","))})
    tmp = Path(tempfile.mkdtemp(prefix="douane-bench-workers-"))
    certs = tmp / "certs"
    subprocess.run([VENV_BIN / "douane", "ca", "--path", "--certs", certs], check=True, capture_output=True)
    bundle = tmp / "bundle.pem"
    subprocess.run([VENV_BIN / "douane", "ca", "--bundle", bundle, "--certs", certs], check=True, capture_output=True)
    env = {k: v for k, v in os.environ.items() if "PROXY" not in k.upper()}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    procs: list[subprocess.Popen] = []
    try:
        mock_port = free_port()
        mock = subprocess.Popen([sys.executable, ROOT / "tests" / "mock_provider.py", "--port", str(mock_port)],
                                stdout=subprocess.DEVNULL)
        procs.append(mock)
        wait_port(mock_port, mock, "mock")
        policy = yaml.safe_load((ROOT / "policies" / "default.yaml").read_text())
        upstream = {"upstream": f"http://127.0.0.1:{mock_port}"}
        policy["providers"] = {p: dict(upstream) for p in ("openai", "anthropic", "gemini")}
        (tmp / "policy.yaml").write_text(yaml.safe_dump(policy))
        proxies = {}
        for n in counts:
            proc, proxy = start(tmp / "policy.yaml", tmp, certs, env, n)
            procs.append(proc)
            proxies[n] = proxy
            measure(proxy, str(bundle), 2.0, args.concurrency, args.load_procs)  # warm-up: connections, caches
        runs: dict[int, list[float]] = {n: [] for n in counts}
        failures = dict.fromkeys(counts, 0)
        for r in range(args.rounds):
            for n in counts if r % 2 == 0 else reversed(counts):
                rps, failed = measure(proxies[n], str(bundle), args.seconds, args.concurrency, args.load_procs)
                runs[n].append(rps)
                failures[n] += failed
                print(f"round {r + 1}: --workers {n}: {rps:.0f} req/s, {failed} not answered 200", flush=True)
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
    report = table(counts, runs, failures)
    print("\n" + report)
    if not args.no_write:
        write(report, args)


def table(counts: list[int], runs: dict[int, list[float]], failures: dict[int, int]) -> str:
    one = statistics.median(runs[1])
    rows = ["| workers | requests/s (median) | runs | not answered 200 | vs N x one worker | goal >= 0.8 |",
            "| --- | --- | --- | --- | --- | --- |"]
    for n in counts:
        rps = statistics.median(runs[n])
        ratio = rps / (n * one)
        rows.append(f"| {n} | {rps:.0f} | {', '.join(f'{v:.0f}' for v in runs[n])} | {failures[n]} | {ratio:.2f} | "
                    f"{'met' if ratio >= GOAL or n == 1 else 'not met'} |")
    return "\n".join(rows)


def write(report: str, args: argparse.Namespace) -> None:
    from benchmarks_md import write_section

    cores = os.cpu_count() or 0
    path = write_section("bench_workers", (
        f"## scripts/bench_workers (all cores: douane run --workers N)\n\nRun {time.strftime('%Y-%m-%d')}, "
        f"{cores} cores (load average {args.load_before:.1f} before the run), concurrency {args.concurrency} "
        f"(keep-alive) from {args.load_procs} load process(es), "
        f"{args.seconds:.0f} s per run, {args.rounds} interleaved rounds, medians; default policy (PII redact), "
        "~2 KB prompts with fresh PII, the same mock upstream (calls it failed are counted, not fatal). The ratio "
        "is requests/s with N workers over N times one worker's; the goal holds up to the core count."
        + (f" **This host has {cores} cores: the load generator and the mock upstream compete with the workers for "
           "them, so these figures understate what N workers do on a host with cores to spare; run "
           "`./scripts/bench_workers --workers 1,2,4,8` on a bigger host.**" if cores <= 4 else "")
        + "\n\n" + report))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
