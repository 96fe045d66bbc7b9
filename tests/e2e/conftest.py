"""End-to-end fixtures: a mock provider and real `douane run` processes, driven through HTTPS_PROXY."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from douane.audit import query
from tests import mock_provider
from tests.redis_server import redis_server

ROOT = Path(__file__).resolve().parents[2]
# Variables this machine pre-sets that would change which CA a client trusts.
CA_VARS = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_DIR", "AWS_CA_BUNDLE")


def listens(pid: int, port: int) -> bool:
    """Whether process `pid` itself listens on 127.0.0.1:`port`. A connection that succeeds is not
    enough: the machine is shared, and between free_port() and douane's bind another process may
    take the port, and a test would then talk to it."""
    proc = Path(f"/proc/{pid}")
    if not proc.exists():  # no procfs: fall back to a connection
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False
    inodes = set()
    try:
        fds = list((proc / "fd").iterdir())
        table = (proc / "net" / "tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:  # closed since it was listed
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    for line in table:  # sl local_address rem_address st ... inode
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].split(":")[1], 16) == port and fields[9] in inodes:
            return True
    return False


def wait_for(what: str, condition: Callable[[], bool], d: Douane, timeout: float = 90) -> None:
    """Poll until `condition` holds; past `timeout`, fail naming `what`, with the tail of douane's log."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}\n--- douane log ---\n{d.log()[-4000:]}")
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def mock() -> Iterator[str]:
    port = free_port()
    server = mock_provider.serve(port)
    yield f"http://127.0.0.1:{port}"
    server.shutdown()


@pytest.fixture()
def received() -> Iterator[list[dict[str, Any]]]:
    """What the mock provider received during one test."""
    with mock_provider.LOCK:
        mock_provider.RECEIVED.clear()
    yield mock_provider.RECEIVED


class Douane:
    """One `douane run` process with its own policy, CA folder and audit store."""

    def __init__(self, tmp: Path, policy: dict[str, Any], certs: Path, extra_args: tuple[str, ...] = (),
                 env: dict[str, str] | None = None):
        self.tmp = tmp
        self.env = env or {}
        self.port = free_port()
        self.policy_path = tmp / "policy.yaml"
        self.policy_path.write_text(yaml.safe_dump(policy))
        self.db = tmp / "audit.duckdb"
        self.certs = certs
        self.log_path = tmp / "douane.log"
        self.args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> Douane:
        env = {k: v for k, v in os.environ.items() if k not in CA_VARS and "PROXY" not in k.upper()}
        # the proxy runs this checkout's code, whatever tree the venv's editable install points at
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        env.update(self.env)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "douane.cli", "run", "--policy", str(self.policy_path),
             "--listen-port", str(self.port), "--db", str(self.db), "--certs", str(self.certs), *self.args],
            cwd=self.tmp, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        if wait:
            deadline = time.monotonic() + 90  # a bound, not a goal: a loaded 2-core machine starts slowly
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"douane exited {self.proc.returncode}:\n{self.log()}")
                if listens(self.proc.pid, self.port):
                    return self
                time.sleep(0.05)
            raise RuntimeError(f"douane did not listen:\n{self.log()}")
        return self

    def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def proxy(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def bundle(self) -> str:
        return str(self.certs / "douane-ca-bundle.pem")

    def client_env(self, credentials: str = "") -> dict[str, str]:
        proxy = f"http://{credentials}@127.0.0.1:{self.port}" if credentials else self.proxy
        return {"HTTPS_PROXY": proxy, "https_proxy": proxy, "SSL_CERT_FILE": self.bundle,
                "REQUESTS_CA_BUNDLE": self.bundle, "NO_PROXY": "", "no_proxy": ""}

    def http(self, credentials: str = "", **kw: Any) -> httpx.Client:
        proxy = f"http://{credentials}@127.0.0.1:{self.port}" if credentials else self.proxy
        return httpx.Client(proxy=proxy, verify=ssl.create_default_context(cafile=self.bundle), timeout=30,
                            trust_env=False, **kw)

    def rows(self, sql: str = "SELECT * FROM requests ORDER BY ts", expect: int | None = None,
             timeout: float = 10) -> list[dict[str, Any]]:
        """Audit rows; with `expect`, waits (bounded) for the writer to land that many, and fails if
        it does not: a test must never assert over fewer rows than it meant to."""
        deadline = time.monotonic() + timeout
        while True:
            columns, rows = query(self.db, sql)
            out = [dict(zip(columns, r, strict=True)) for r in rows]
            if expect is None or len(out) >= expect:
                return out
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {expect} audit row(s) within {timeout} s, got {len(out)}: {sql}")
            time.sleep(0.05)


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("certs")


def routed_policy(mock_url: str, **extra: Any) -> dict[str, Any]:
    providers = {name: {"upstream": mock_url} for name in ("openai", "anthropic", "gemini")}
    providers.update(extra.pop("providers", {}))
    return {"version": 1, "providers": providers, **extra}


@pytest.fixture(scope="session")
def douane(tmp_path_factory: pytest.TempPathFactory, mock: str, certs: Path) -> Iterator[Douane]:
    """The shared proxy: default policy, every built-in provider sent to the mock."""
    d = Douane(tmp_path_factory.mktemp("douane"), routed_policy(mock), certs).start()
    yield d
    d.stop()


@pytest.fixture()
def make_douane(tmp_path: Path, mock: str, certs: Path) -> Iterator[Any]:
    """A proxy with a policy of the test's own (and environment variables of its own, e.g. a ProxyClock's)."""
    started: list[Douane] = []

    def make(policy: dict[str, Any] | None = None, start: bool = True, args: tuple[str, ...] = (),
             env: dict[str, str] | None = None, **policy_keys: Any) -> Douane:
        folder = tmp_path / f"d{len(started)}"
        folder.mkdir()
        d = Douane(folder, policy or routed_policy(mock, **policy_keys), certs, args, env)
        started.append(d)
        return d.start() if start else d

    yield make
    for d in started:
        d.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on loopback, for state shared between proxy instances."""
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


class ProxyClock:
    """A running proxy's clock (douane.clock): a file the test rewrites to move time. Pass `env` to
    make_douane; it turns fault injection on, which the test clock needs."""

    def __init__(self, folder: Path, start: str = "2030-01-01T00:00:10+00:00"):
        self.path = folder / "douane-now"
        self.set(start)

    @property
    def env(self) -> dict[str, str]:
        return {"DOUANE_FAULT_INJECTION": "1", "DOUANE_TEST_CLOCK": str(self.path)}

    @property
    def now(self) -> datetime:
        return datetime.fromisoformat(self.path.read_text())

    def set(self, when: str | datetime) -> None:
        text = when if isinstance(when, str) else when.astimezone(UTC).isoformat()
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.path)  # atomic: the proxy never reads half a time

    def advance(self, seconds: float) -> None:
        self.set(self.now + timedelta(seconds=seconds))


def body_of(entry: dict[str, Any]) -> Any:
    return entry["body"] if entry["body"] is not None else json.loads(entry["raw"])
