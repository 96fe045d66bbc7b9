"""`douane run --workers N`: N proxy processes on one listening port, one audit store, one admin port.

One douane process is one Python event loop: one core. With N > 1 the `douane run` process becomes a
parent that serves no call itself:

- **One port.** The parent binds and listens; each worker inherits the listening socket and
  accepts from it, one connection per wake-up, and a worker holding more open connections than
  the least busy other leaves a new one to it for a millisecond (counts in shared memory;
  BalancedServer): keep-alive connections, which pin a client to a worker, end up spread evenly.
  SO_REUSEPORT would instead hash each connection to a fixed worker, busy or not, and reset the
  connections queued on a worker that dies. The port belongs to the parent: it stays open while a
  dead worker is replaced, and the other workers go on accepting.
- **One audit writer.** Workers send their records over a Unix socket to the parent, whose one
  AuditWriter writes them (one hash chain, one manifest, one compaction: `douane audit verify` and
  the `requests` view see one store). Parquet encoding leaves the workers' GIL with it. A worker
  killed with SIGKILL loses only the records it had not yet handed over (its calls in flight).
- **Exact limits.** Counters kept in a worker's memory would let each worker pass the limit:
  with a policy that has limits or budgets, N > 1 requires `state.backend: redis`, whose Lua
  check-and-reserve is already exact across any number of processes (refused at start otherwise).
- **Signals.** SIGTERM/SIGINT are forwarded to every worker, which drains as a single process
  does; the parent exits once every worker has exited and every record has been written. SIGHUP is
  forwarded to every worker; each reloads the same file and logs the policy_hash it reached.
- **Restarts.** A worker that exits while the parent serves is started again, and the log says so.
- **Admin.** The parent serves --admin-port: /healthz, /readyz (every worker ready and the audit
  writer healthy) and /metrics (every worker's counters summed, the audit gauges the parent's own).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import mmap
import os
import signal
import socket
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from douane.audit.record import AuditRecord, from_json, spill_line
from douane.audit.store import AuditStore
from douane.audit.writer import WriterHealth, keep_unwritten

if TYPE_CHECKING:
    from douane.audit.writer import AuditWriter
    from douane.gateway import Gateway, Generation
    from douane.ops.admin import AdminServer
    from douane.policy import Policy
    from douane.runner import AdminConfig, ListenConfig

log = logging.getLogger(__name__)

BACKLOG = 4096  # the listening socket's accept queue, shared by every worker
RESTART_DELAYS = (0.0, 0.5, 1.0, 2.0, 5.0, 10.0)  # after quick deaths in a row: a crash loop must not spin
QUICK_DEATH_S = 10.0  # a worker that lived less than this counts as a quick death
READY_TIMEOUT_S = 120.0  # a bound on a worker's start (a loaded 2-core machine builds detectors slowly)
STOP_MARGIN_S = 15.0  # past the grace period, how long a worker gets to write its last records


class WorkersRefused(Exception):
    """`--workers N` cannot serve this policy or mode; the message names the key to change."""


def refuse_split_counters(policy: Policy, workers: int, where: str = "the policy") -> None:
    """Limits and budgets counted in each worker's memory would let N times the limit through."""
    if workers <= 1 or policy.state.backend != "memory":
        return
    limited = [f"teams.{name}" for name, team in policy.teams.items() if team.limited]
    limited += [f"clients[{i}] ({c.name})" for i, c in enumerate(policy.clients or []) if c.limited]
    if limited:
        raise WorkersRefused(
            f"{where} sets limits or budgets ({', '.join(limited[:3])}{', ...' if len(limited) > 3 else ''}) "
            f"counted in memory (state.backend: memory): each of the {workers} workers would count its own and let "
            "the limit through once per worker. Set `state: {backend: redis, url: redis://HOST:6379/0}` "
            "(exact across workers and instances), or run with --workers 1")


# -- the audit channel: worker side ----------------------------------------------------------------


def _message(kind: str, **values: Any) -> bytes:
    return json.dumps({"t": kind, **values}).encode() + b"\n"


class ChannelWriter:
    """A worker's audit writer: hands each record to the parent over a Unix socket, from a thread of
    its own (the event loop never waits on the socket). Same interface as AuditWriter for the
    gateway, the probe and the runner. When the parent is gone, the records it did not take go to
    the store's spill file (`store`), which the next start folds in, as AuditWriter does at close."""

    def __init__(self, sock: socket.socket, store: AuditStore | None = None, batch: int = 256):
        self._sock = sock
        self._store = store
        self._batch = batch
        self._pending: deque[tuple[bytes, AuditRecord | None]] = deque()  # (line, the record it carries)
        self._cond = threading.Condition()
        self._submitted = self._sent = self._spilled = self._lost = 0
        self._closing = False
        self._problem: str | None = None
        self._thread = threading.Thread(target=self._run, name="douane-audit-channel", daemon=True)

    def start(self, lock: int | None = None) -> None:
        self._thread.start()

    def say(self, kind: str, **values: Any) -> None:
        """A message for the parent (ready, goodbye), in order with the records."""
        self._put(_message(kind, **values), None)

    def submit(self, record: AuditRecord) -> None:
        self._put(b'{"t":"r","v":' + spill_line(record).rstrip("\n").encode() + b"}\n", record)

    def _put(self, line: bytes, record: AuditRecord | None) -> None:
        with self._cond:
            if self._problem is None:
                self._pending.append((line, record))
                self._submitted += record is not None
                self._cond.notify_all()
                return
        if record is not None:
            self._keep([record])

    def _keep(self, records: list[AuditRecord]) -> None:
        """Records the parent will not take: into the store's spill file, else counted lost."""
        path = keep_unwritten(self._store, records) if self._store is not None and records else None
        with self._cond:
            if path is not None:
                self._spilled += len(records)
            else:
                self._lost += len(records)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every record submitted so far has been handed to the parent."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending and self._problem is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return self._problem is None

    def close(self, timeout: float = 30.0) -> WriterHealth:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_WR)  # the parent reads to the end, then sees EOF
        return self.health()

    def health(self) -> WriterHealth:
        with self._cond:
            unsent = sum(1 for _, record in self._pending if record is not None)
            reason = f"the audit channel to the parent failed: {self._problem}" if self._problem else None
            return WriterHealth(status="ok" if reason is None else "degraded", reason=reason, pending=unsent,
                                written=self._sent, folded=0, quarantined=0, spilled=self._spilled, lost=self._lost,
                                failures=int(self._problem is not None), degraded_for=None)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if not self._pending:
                    return
                batch = [self._pending[i] for i in range(min(len(self._pending), self._batch))]
            try:
                self._sock.sendall(b"".join(line for line, _ in batch))
            except OSError as e:
                with self._cond:
                    self._problem = str(e)
                    left = [record for _, record in self._pending if record is not None]
                    self._pending.clear()
                    self._cond.notify_all()
                log.error("audit: cannot hand records to the douane parent (%s): %d record(s) go to the spill file",
                          e, len(left))
                self._keep(left)
                return
            with self._cond:
                for _ in batch:
                    self._pending.popleft()
                self._sent += sum(1 for _, record in batch if record is not None)
                self._cond.notify_all()


# -- the audit channel: parent side ----------------------------------------------------------------


class Sink:
    """Reads one worker's channel to its end, in a thread: records go to the parent's writer, the
    other messages to `on_message` (called on the reading thread)."""

    def __init__(self, sock: socket.socket, writer: AuditWriter, on_message: Callable[[dict[str, Any]], None]):
        self.sock = sock
        self.writer = writer
        self.on_message = on_message
        self.records = 0
        self.unreadable = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="douane-audit-sink", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        try:
            with self.sock.makefile("rb") as stream:
                for line in stream:
                    self._take(line)
        except OSError as e:
            log.error("douane: reading a worker's audit channel failed: %s", e)
        finally:
            self.sock.close()
            self.done.set()

    def _take(self, line: bytes) -> None:
        try:
            message = json.loads(line)
            if message.get("t") == "r":
                record = from_json(message["v"])
            else:
                self.on_message(message)
                return
        except (ValueError, KeyError, TypeError) as e:  # a worker cut off mid-line (killed): say so
            self.unreadable += 1
            log.error("douane: an unreadable line on a worker's audit channel (%s): %.200r", e, line)
            return
        self.writer.submit(record)
        self.records += 1


# -- the parent: one port, N workers ------------------------------------------------------------


@dataclass
class WorkerSpec:
    """What a worker process needs to serve (passed as JSON on its command line)."""

    index: int
    workers: int
    policy_path: str
    db_path: str
    listen_fd: int
    channel_fd: int
    shares_fd: int
    host: str
    port: int
    certs: str
    sets: list[str]
    mode: str
    grace: float
    admin: bool


def bind(host: str, port: int) -> socket.socket:
    """The listening socket every worker accepts from (OSError when the address is taken)."""
    if host in ("", "::") and socket.has_dualstack_ipv6():
        return socket.create_server(("::", port), family=socket.AF_INET6, backlog=BACKLOG, dualstack_ipv6=True)
    family = socket.getaddrinfo(host or "0.0.0.0", port, type=socket.SOCK_STREAM)[0][0]
    return socket.create_server((host or "0.0.0.0", port), family=family, backlog=BACKLOG)


@dataclass
class Slot:
    """One worker's place: its current process, channel and what it reported."""

    index: int
    proc: asyncio.subprocess.Process | None = None
    sink: Sink | None = None
    started: float = 0.0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    admin_port: int | None = None
    policy_hash: str | None = None
    unrecorded: int = 0
    quick_deaths: int = 0
    records: int = 0  # over the processes this slot had before the current one

    @property
    def received(self) -> int:
        """Records handed over by every process of this slot."""
        return self.records + (self.sink.records if self.sink is not None else 0)


class Pool:
    def __init__(self, gw: Gateway, listen: ListenConfig, workers: int, grace: float, policy_path: str,
                 admin: bool):
        self.gw = gw
        self.listen = listen
        self.workers = workers
        self.grace = grace
        self.policy_path = policy_path
        self.admin = admin
        self.sock: socket.socket | None = None
        self.slots = [Slot(i + 1) for i in range(workers)]
        self.stopping = False
        self.stopped = asyncio.Event()
        self.restarts = 0
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Bind, start every worker, wait until each is ready; RuntimeError when one cannot start."""
        self.sock = bind(self.listen.host, self.listen.port)
        self.shares_fd = shared_counts(self.workers)
        self.shares = Shares(self.shares_fd, self.workers)
        self.listen.port = self.sock.getsockname()[1]
        for slot in self.slots:
            await self._spawn(slot)
        try:
            await asyncio.gather(*(self._until_ready(slot) for slot in self.slots))
        except BaseException:
            await self.stop("start-up failed", graceful=False)
            raise
        for slot in self.slots:
            self._watch(slot)

    async def _until_ready(self, slot: Slot) -> None:
        """Wait until the slot's worker says it is ready; RuntimeError when it exits first or is slow."""
        assert slot.proc is not None
        ready = asyncio.ensure_future(slot.ready.wait())
        exited = asyncio.ensure_future(slot.proc.wait())
        try:
            done, _ = await asyncio.wait({ready, exited}, timeout=READY_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
            exited.cancel()
        if ready in done:
            return
        if exited in done:
            code = describe_exit(slot.proc.returncode or 0)
            raise RuntimeError(f"worker {slot.index} exited while starting ({code}; its log is above)")
        raise RuntimeError(f"worker {slot.index} was not ready within {READY_TIMEOUT_S:g} s")

    async def _spawn(self, slot: Slot) -> None:
        assert self.sock is not None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        spec = WorkerSpec(index=slot.index, workers=self.workers, policy_path=self.policy_path,
                          db_path=str(self.gw.db_path), listen_fd=self.sock.fileno(), channel_fd=theirs.fileno(),
                          shares_fd=self.shares_fd,
                          host=self.listen.host, port=self.listen.port, certs=self.listen.certs,
                          sets=list(self.listen.sets), mode=self.listen.mode, grace=self.grace, admin=self.admin)
        if slot.sink is not None:  # the previous process's channel, read to its end
            slot.records += slot.sink.records
        slot.ready = asyncio.Event()
        slot.admin_port = slot.policy_hash = None
        def on_message(message: dict[str, Any]) -> None:
            self._loop.call_soon_threadsafe(self._on_message, slot, message)

        slot.sink = Sink(ours, self.gw.writer, on_message)
        slot.sink.start()
        try:
            slot.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "douane.workers", json.dumps(asdict(spec)),
                pass_fds=(self.sock.fileno(), theirs.fileno(), self.shares_fd), stdin=asyncio.subprocess.DEVNULL)
        finally:
            theirs.close()
        slot.started = self._loop.time()

    def _on_message(self, slot: Slot, message: dict[str, Any]) -> None:
        kind = message.get("t")
        if kind == "ready":
            slot.admin_port = message.get("admin_port")
            slot.policy_hash = message.get("policy_hash")
            slot.ready.set()
            log.warning("douane: worker %d of %d ready (pid %s, policy_hash %s)", slot.index, self.workers,
                        message.get("pid"), slot.policy_hash)
        elif kind == "policy":
            slot.policy_hash = message.get("policy_hash")
            log.warning("douane: worker %d (pid %s) now serves policy_hash %s", slot.index, message.get("pid"),
                        slot.policy_hash)
            hashes = {s.policy_hash for s in self.slots}
            if len(hashes) == 1:
                log.warning("douane: every worker serves policy_hash %s", slot.policy_hash)
        elif kind == "bye":
            slot.unrecorded += int(message.get("unrecorded", 0))

    def _watch(self, slot: Slot) -> None:
        task = self._loop.create_task(self._supervise(slot))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _supervise(self, slot: Slot) -> None:
        """Start the slot's worker again whenever it exits while the parent serves."""
        while True:
            assert slot.proc is not None and slot.sink is not None
            code = await slot.proc.wait()
            self.shares.set(slot.index - 1, Shares.GONE)  # the others stop leaving connections to it
            await asyncio.to_thread(slot.sink.done.wait)
            if self.stopping:
                return
            lived = self._loop.time() - slot.started
            slot.quick_deaths = slot.quick_deaths + 1 if lived < QUICK_DEATH_S else 0
            delay = RESTART_DELAYS[min(slot.quick_deaths, len(RESTART_DELAYS) - 1)]
            log.error("douane: worker %d (pid %d) %s after %.1f s; the other workers keep serving the port; "
                      "starting a new worker %d%s", slot.index, slot.proc.pid, describe_exit(code), lived,
                      slot.index, f" in {delay:g} s" if delay else "")
            if delay:
                await asyncio.sleep(delay)  # backoff between restarts, not a synchronisation
            if self.stopping:
                return
            self.restarts += 1
            await self._spawn(slot)
            log.warning("douane: worker %d restarted (pid %d)", slot.index, slot.proc.pid)
            if self.stopping:  # the stop began while it was being started: it never got the signal
                with contextlib.suppress(ProcessLookupError):
                    slot.proc.send_signal(signal.SIGTERM)

    def reload(self) -> None:
        """SIGHUP: every worker reloads the same policy file."""
        log.warning("douane: SIGHUP: every worker reloads %s", self.policy_path)
        for slot in self.slots:
            if slot.proc is not None and slot.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    slot.proc.send_signal(signal.SIGHUP)

    def on_signal(self, sig: signal.Signals) -> None:
        if not self.stopping:
            task = self._loop.create_task(self.stop(sig.name))
            self._tasks.add(task)
        else:  # a second signal: the workers cut their calls off now
            log.warning("douane: %s again: the workers cut off their calls in flight now", sig.name)
            self._signal_all(signal.SIGTERM)

    def _signal_all(self, sig: signal.Signals) -> None:
        for slot in self.slots:
            if slot.proc is not None and slot.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    slot.proc.send_signal(sig)

    async def stop(self, why: str, graceful: bool = True) -> None:
        """Stop every worker (they drain their calls) and wait until each has exited and every record
        it sent has reached the writer."""
        self.stopping = True
        if self.sock is not None:
            self.sock.close()  # the workers' copies keep the port until each stops listening
        if graceful:
            log.warning("douane: %s: stopping %d worker(s); each finishes its calls in flight (up to %g s)",
                        why, self.workers, self.grace)
        self._signal_all(signal.SIGTERM)
        deadline = self._loop.time() + (self.grace + STOP_MARGIN_S if graceful else 5.0)
        for slot in self.slots:
            if slot.proc is None:
                continue
            try:
                await asyncio.wait_for(slot.proc.wait(), max(0.1, deadline - self._loop.time()))
            except TimeoutError:
                log.error("douane: worker %d (pid %d) did not stop in time: killed; its calls in flight have no row",
                          slot.index, slot.proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    slot.proc.kill()
                await slot.proc.wait()
                slot.unrecorded += 1  # at least: it could not say how many
        for slot in self.slots:
            if slot.sink is not None:
                await asyncio.to_thread(slot.sink.done.wait)
        for task in list(self._tasks):
            if task is not asyncio.current_task():
                task.cancel()  # each is waiting on an exited process or a restart's backoff
        self.stopped.set()

    @property
    def unrecorded(self) -> int:
        return sum(slot.unrecorded for slot in self.slots)


def describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with code {code}"


async def supervise(gw: Gateway, listen: ListenConfig, workers: int, on_ready: Callable[[], None] | None,
                    grace: float, admin: AdminConfig | None, policy_path: str) -> int:
    """The parent of `douane run --workers N`: serve until SIGINT/SIGTERM; returns the number of
    calls the workers could not record (0 when every call has its row)."""
    pool = Pool(gw, listen, workers, grace, policy_path, admin is not None)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, pool.on_signal, sig)
    loop.add_signal_handler(signal.SIGHUP, pool.reload)
    server: AdminServer | None = None
    try:
        if admin is not None:
            from douane.ops.admin import AdminServer
            from douane.workers_admin import pool_routes

            server = AdminServer(pool_routes(pool), admin.host, admin.port)
            admin.port = await server.start()
        await pool.start()
        if on_ready is not None:
            on_ready()
        await pool.stopped.wait()
    finally:
        if server is not None:
            await server.close()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)
    counts = ", ".join(f"worker {s.index}: {s.received}" for s in pool.slots)
    log.warning("douane: records received from the workers: %s; %d restart(s)", counts, pool.restarts)
    return pool.unrecorded


# -- a worker process -----------------------------------------------------------------------------


class Shares:
    """Each worker's open connections, in memory every worker maps (a memfd the parent made): a
    worker with more than the least busy one leaves a new connection to it for a moment."""

    GONE = 2**62  # a slot whose worker died: never the least busy

    def __init__(self, fd: int, workers: int, index: int | None = None):
        self._map = mmap.mmap(fd, 8 * workers)
        self._workers = workers
        self._index = index  # None: the parent

    def set(self, slot: int, value: int) -> None:
        struct.pack_into("q", self._map, 8 * slot, value)

    def mine(self, value: int) -> None:
        assert self._index is not None
        self.set(self._index, value)

    def least_other(self) -> int:
        return min((struct.unpack_from("q", self._map, 8 * i)[0] for i in range(self._workers) if i != self._index),
                   default=self.GONE)


def shared_counts(workers: int) -> int:
    """The parent's memfd of `workers` counters (all zero)."""
    fd = os.memfd_create("douane-workers", 0)
    os.ftruncate(fd, 8 * workers)
    return fd


DEFER_S = 0.001  # how long a busier worker leaves a new connection to the others (then takes it)


class BalancedServer:
    """Accepts from the shared listening socket, one connection per wake-up; while this worker has
    more open connections than the least busy other (by more than one), it first waits DEFER_S, so
    an idle worker takes the connection. Stands in for the asyncio.Server mitmproxy keeps (it
    reads `sockets` and calls `close`)."""

    def __init__(self, sock: socket.socket, handle: Callable[..., Any], shares: Shares | None):
        sock.setblocking(False)  # another worker may take the connection first: accept must not wait for the next
        self.sockets = [sock]
        self._sock = sock
        self._handle = handle
        self._shares = shares
        self._open = 0
        self._loop = asyncio.get_running_loop()
        self._conns: set[asyncio.Task[None]] = set()
        self._task = self._loop.create_task(self._accept_forever())
        self._count(0)  # this worker serves: the others may leave connections to it

    async def _accept_forever(self) -> None:
        while True:
            await self._readable()
            if self._shares is not None and self._open > self._shares.least_other() + 1:
                await asyncio.sleep(DEFER_S)  # a policy of who accepts, not a wait for anything
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                continue  # another worker took it
            except OSError as e:
                log.error("douane: accepting a connection failed: %s", e)
                continue
            conn.setblocking(False)
            self._count(+1)
            task = self._loop.create_task(self._serve(conn))
            self._conns.add(task)
            task.add_done_callback(self._conns.discard)

    async def _readable(self) -> None:
        ready: asyncio.Future[None] = self._loop.create_future()
        fd = self._sock.fileno()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        self._loop.add_reader(fd, wake)
        try:
            await ready
        finally:
            self._loop.remove_reader(fd)

    async def _serve(self, conn: socket.socket) -> None:
        try:
            reader, writer = await asyncio.open_connection(sock=conn)
            await self._handle(reader, writer)
        finally:
            self._count(-1)

    def _count(self, delta: int) -> None:
        self._open += delta
        if self._shares is not None:
            self._shares.mine(self._open)

    def close(self) -> None:
        """Stop accepting (connections already accepted go on)."""
        self._loop.remove_reader(self._sock.fileno())
        self._task.cancel()
        self._sock.close()


def accept_from(sock: socket.socket, shares: Shares | None) -> None:
    """Make mitmproxy's TCP listeners serve the inherited socket through a BalancedServer (asyncio's
    own server takes up to 100 queued connections per wake-up, leaving the other workers none)."""
    from mitmproxy.proxy.mode_servers import AsyncioServerInstance

    async def listen(self: Any, host: str, port: int) -> list[Any]:
        if self.mode.transport_protocol != "tcp":
            raise OSError(f"douane workers serve TCP modes only, not {self.mode.full_spec}")
        return [BalancedServer(sock, self.handle_stream, shares)]

    AsyncioServerInstance.listen = listen  # type: ignore[method-assign]


def die_with_parent() -> None:
    """SIGTERM this worker when the parent dies (Linux): it drains instead of serving unsupervised."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:
            os.kill(os.getpid(), signal.SIGTERM)


def worker_gateway(spec: WorkerSpec, writer: ChannelWriter) -> Gateway:
    from douane.gateway import ConfigError, Gateway
    from douane.policy import load_policy

    class WorkerGateway(Gateway):
        def prepare(self, policy: Policy) -> Generation:
            """A reload may not add limits counted in memory either."""
            try:
                refuse_split_counters(policy, spec.workers, "the reloaded policy")
            except WorkersRefused as e:
                raise ConfigError(str(e)) from None
            return super().prepare(policy)

    return WorkerGateway(load_policy(spec.policy_path), Path(spec.db_path), writer=writer)  # type: ignore[arg-type]


def worker_main(spec: WorkerSpec) -> int:
    from douane.runner import AdminConfig, ListenConfig, serve

    die_with_parent()
    channel = socket.socket(fileno=spec.channel_fd)
    writer = ChannelWriter(channel, AuditStore(spec.db_path))
    writer.start()
    gw = worker_gateway(spec, writer)
    accept_from(socket.socket(fileno=spec.listen_fd), Shares(spec.shares_fd, spec.workers, spec.index - 1))
    listen = ListenConfig(spec.host, spec.port, spec.certs, tuple(spec.sets), spec.mode)
    admin = AdminConfig("127.0.0.1", 0) if spec.admin else None
    watch_generation(gw, writer)

    def ready() -> None:
        writer.say("ready", pid=os.getpid(), admin_port=admin.port if admin else None, policy_hash=gw.current.hash)

    try:
        asyncio.run(serve(gw, listen, on_ready=ready, grace=spec.grace, admin=admin, policy_path=spec.policy_path))
    except ValueError as e:  # a --set mitmproxy option douane refuses: a usage error, said once per worker
        print(f"douane: cannot start: {e}", file=sys.stderr)
        return 2
    finally:
        writer.say("bye", unrecorded=len(gw.inflight))
        health = writer.close()
    return 0 if health.ok and not gw.inflight else 1


def watch_generation(gw: Gateway, writer: ChannelWriter) -> None:
    """Tell the parent each policy this worker puts in force (so it can say when all agree)."""
    put_in_force = gw.put_in_force

    def announce(generation: Generation) -> Generation:
        previous = put_in_force(generation)
        writer.say("policy", pid=os.getpid(), policy_hash=generation.hash)
        return previous

    gw.put_in_force = announce  # type: ignore[method-assign]


def main(argv: list[str]) -> int:
    spec = WorkerSpec(**json.loads(argv[1]))
    return worker_main(spec)


if __name__ == "__main__":
    sys.exit(main(sys.argv))

