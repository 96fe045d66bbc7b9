"""The running gateway: the parts every addon shares, and the policy generation each call is judged under.

A policy reload (SIGHUP) does not change the policy under a call in flight: everything built from
one policy (providers, guard settings and their detectors, prices, the rules of limits and budgets,
the clients' directory, the MCP servers) is one `Generation`, swapped in whole. Each flow is bound
to the generation current when it started (addons.generation), and `gw.policy` and its siblings
read the bound one; code running outside any flow reads the current one. What carries state
across policies is shared by every generation: the audit writer, the limits' and budgets' counters,
the circuit breakers, the detectors already built, the calls in flight.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar, Token
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from douane.audit import AuditStore, AuditWriter
from douane.audit.chain import valid_instance_id
from douane.audit.settings import AuditSettings, Retention
from douane.audit.signing import Signer
from douane.call import Call
from douane.clock import Clock, from_environment
from douane.guard_settings import Detectors, GuardBook, GuardConfigError, Guards
from douane.identity import Directory
from douane.mcp import McpServers
from douane.meter.limits import Limits
from douane.meter.pricing import Pricer
from douane.meter.state import MemoryState, RedisState, State
from douane.moderation import Moderator
from douane.ops.metrics import Metrics
from douane.policy import Policy
from douane.providers import BUILTIN_PROVIDERS, ProviderSpec, ProviderTable
from douane.relay import Breakers, Relay
from douane.rewrite import OutputGuard, PseudonymRestorer, Stage

if TYPE_CHECKING:
    from douane.ops.anomaly import AnomalyGuard, Finding
    from douane.ops.tracing import Tracer

log = logging.getLogger(__name__)


def provider_specs(policy: Policy) -> list[ProviderSpec]:
    """Built-in providers with the policy's overrides, plus the policy's custom providers."""
    specs = []
    for name, (fmt, hosts) in BUILTIN_PROVIDERS.items():
        cfg = policy.providers.get(name)
        if cfg is None:
            specs.append(ProviderSpec(name, fmt, hosts))
        else:
            specs.append(ProviderSpec(name, cfg.format or fmt, tuple(cfg.hosts or hosts), cfg.upstream,
                                      cfg.api_key_env, cfg.api_key_file))
    for name, cfg in policy.providers.items():
        if name not in BUILTIN_PROVIDERS:
            assert cfg.format and cfg.hosts, "checked by the policy loader"
            specs.append(ProviderSpec(name, cfg.format, tuple(cfg.hosts), cfg.upstream, cfg.api_key_env,
                                      cfg.api_key_file))
    return specs


def make_state(policy: Policy) -> State:
    if policy.state.backend == "redis":
        return RedisState(policy.state.url)
    return MemoryState()


class ConfigError(Exception):
    """The policy is valid but the environment cannot serve it (a missing key, say)."""


def central_keys(specs: list[ProviderSpec]) -> dict[str, str]:
    """Provider keys the proxy injects, read from the environment or a file at start-up and at each
    reload (a key rotated is read again; one missing refuses the reload)."""
    keys = {}
    for spec in specs:
        if spec.api_key_env:
            value = os.environ.get(spec.api_key_env, "").strip()
            if not value:
                raise ConfigError(f"providers.{spec.name}.api_key_env: environment variable "
                                  f"{spec.api_key_env} is empty or not set; export it before douane run")
            keys[spec.name] = value
        elif spec.api_key_file:
            try:
                value = Path(spec.api_key_file).read_text(encoding="utf-8").strip()
            except OSError as e:
                raise ConfigError(f"providers.{spec.name}.api_key_file: cannot read {spec.api_key_file}: "
                                  f"{e.strerror}") from None
            if not value:
                raise ConfigError(f"providers.{spec.name}.api_key_file: {spec.api_key_file} is empty")
            keys[spec.name] = value
    return keys


def audit_settings(policy: Policy) -> AuditSettings:
    """The audit writer's settings: the policy's `audit.*` keys, and DOUANE_INSTANCE_ID."""
    audit = policy.audit
    try:
        signer = Signer.from_file(audit.signing_key_file) if audit.signing_key_file else None
    except ValueError as e:
        raise ConfigError(f"audit.signing_key_file: {e}") from None
    instance = os.environ.get("DOUANE_INSTANCE_ID", "").strip() or None
    if instance is not None:
        try:
            valid_instance_id(instance)
        except ValueError as e:
            raise ConfigError(f"DOUANE_INSTANCE_ID: {e}") from None
    return AuditSettings(instance_id=instance, signer=signer, checkpoint_every=audit.checkpoint_every_s,
                         checkpoint_copy=audit.checkpoint_copy, fleet=audit.fleet, fleet_every=audit.fleet_every_s,
                         retention=Retention(audit.retention_days.bodies, audit.retention_days.rows))


def policy_digest(policy: Policy) -> str:
    """A short fingerprint of the policy in force, for each audit row (`policy_hash`)."""
    return hashlib.sha256(policy.model_dump_json().encode()).hexdigest()[:16]


@dataclass(frozen=True, eq=False)
class Generation:
    """Everything built from one policy, swapped in whole by a reload; `number` counts them from 1."""

    number: int
    policy: Policy
    hash: str  # policy_digest: on every audit row (`policy_hash`)
    providers: ProviderTable
    guard_book: GuardBook
    provider_keys: dict[str, str]
    pricer: Pricer
    limits: Limits  # the rules; their counters are the gateway's state, shared by every generation
    directory: Directory
    mcp: McpServers

    @property
    def allow_hosts(self) -> list[str]:
        """mitmproxy's allow_hosts: the providers' and MCP servers' hosts, intercepted; all else tunnelled."""
        return self.providers.allow_hosts() + self.mcp.allow_hosts()


KeyReader = Callable[[list[ProviderSpec]], dict[str, str]]


class Gateway:
    """`policy` and what is built from it are the bound generation's (see the module's docstring).

    `writer`, `clock`, `state` and `keys` are for tools that judge calls without serving them
    (douane policy test, replay): an audit writer of their own, a clock they move, counters that
    start empty, and no provider key read from the environment."""

    def __init__(self, policy: Policy, db_path: Path | None, *, writer: AuditWriter | None = None,
                 clock: Clock | None = None, state: State | None = None, keys: KeyReader | None = None,
                 detectors: Detectors | None = None):
        self.db_path = db_path
        try:
            self.clock = clock or from_environment()
        except ValueError as e:
            raise ConfigError(str(e)) from None
        self.detectors = detectors or Detectors()
        self.read_keys = keys or central_keys
        self.state = state or make_state(policy)
        self._numbers = itertools.count(1)
        self._bound: ContextVar[Generation | None] = ContextVar(f"douane.generation.{id(self)}", default=None)
        self.current = self.prepare(policy)
        if writer is None:
            assert db_path is not None, "a gateway that writes its own audit store needs its path"
            writer = AuditWriter(AuditStore(db_path), settings=audit_settings(policy))
        self.writer = writer
        self.relay = Relay(Breakers(policy.breaker.failures, policy.breaker.cooldown_s, clock=self.clock.monotonic))
        self.inflight: set[str] = set()  # ids of calls classified, not yet recorded
        self.draining = False  # stopping: answers say `connection: close`
        # built from the policy douane started with: a reload keeps them (telemetry and anomaly
        # settings take a restart)
        self.metrics: Metrics | None = None  # counted per call when the admin port is on
        self.tracer: Tracer | None = None  # a span per call when telemetry.otlp_endpoint is set
        self.anomaly: AnomalyGuard | None = None  # with the policy's `anomaly:`
        if policy.telemetry.otlp_endpoint is not None:
            from douane.ops.tracing import Tracer

            self.tracer = Tracer(policy.telemetry)
        if policy.anomaly is not None:
            from douane.ops.anomaly import AnomalyGuard, SharedAnomalies

            self.anomaly = AnomalyGuard(policy.anomaly, on_finding=self._count_anomaly)
            if isinstance(self.state, RedisState):
                self.anomaly.shared = SharedAnomalies(self.state.client, self.state.prefix)

    def _count_anomaly(self, finding: Finding, action: str) -> None:
        if self.metrics is not None:
            self.metrics.anomalies.add((finding.subject[0], finding.signal, action))

    # -- generations ----------------------------------------------------------------------------------

    def prepare(self, policy: Policy) -> Generation:
        """Everything a policy needs built, without putting it in force; ConfigError when the
        environment cannot serve it (a missing key, an unknown PII entity) or a running gateway
        cannot take it without a restart (another state backend)."""
        current: Generation | None = getattr(self, "current", None)
        if current is not None and policy.state != current.policy.state:
            raise ConfigError("state: the backend of limits and budgets changed; counters cannot move between "
                              "backends while douane runs: restart douane to use the new one")
        providers = ProviderTable(provider_specs(policy))
        try:
            book = GuardBook(policy, self.detectors)
        except GuardConfigError as e:
            raise ConfigError(str(e)) from None
        return Generation(number=next(self._numbers), policy=policy, hash=policy_digest(policy), providers=providers,
                          guard_book=book, provider_keys=self.read_keys(providers.specs), pricer=Pricer(policy.prices),
                          limits=Limits(policy, self.state, self.clock), directory=Directory(policy),
                          mcp=McpServers(policy))

    def put_in_force(self, generation: Generation) -> Generation:
        """Make `generation` the one new calls start under (calls in flight keep theirs); the previous."""
        previous, self.current = self.current, generation
        breakers, rule = self.relay.breakers, generation.policy.breaker
        breakers.failures, breakers.cooldown = rule.failures, rule.cooldown_s  # their counts are kept
        return previous

    @property
    def generation(self) -> Generation:
        """The generation the code running now judges under: its flow's, else the current one."""
        return self._bound.get() or self.current

    def bind(self, generation: Generation | None) -> Token[Generation | None]:
        """Judge under `generation` (None: the current one) in this context until `unbind`."""
        return self._bound.set(generation)

    def unbind(self, token: Token[Generation | None]) -> None:
        self._bound.reset(token)

    @contextlib.contextmanager
    def bound(self, generation: Generation | None) -> Iterator[None]:
        token = self.bind(generation)
        try:
            yield
        finally:
            self.unbind(token)

    # -- the bound generation's parts -----------------------------------------------------------------

    @property
    def policy(self) -> Policy:
        return self.generation.policy

    @policy.setter
    def policy(self, policy: Policy) -> None:
        """Put another policy in force at once (tests; a running proxy reloads through douane.reload)."""
        self.put_in_force(self.prepare(policy))

    @property
    def policy_hash(self) -> str:
        return self.generation.hash

    @property
    def providers(self) -> ProviderTable:
        return self.generation.providers

    @property
    def guard_book(self) -> GuardBook:
        return self.generation.guard_book

    @property
    def provider_keys(self) -> dict[str, str]:
        return self.generation.provider_keys

    @property
    def pricer(self) -> Pricer:
        return self.generation.pricer

    @property
    def limits(self) -> Limits:
        return self.generation.limits

    @property
    def directory(self) -> Directory:
        return self.generation.directory

    @property
    def mcp_servers(self) -> McpServers:
        return self.generation.mcp

    @property
    def enforcing(self) -> bool:
        return self.policy.enforcing

    def guards(self, call: Call) -> Guards:
        """The guard settings that apply to this call (its client's, its team's or the policy's), with
        their detectors: the one place every stage reads them from."""
        return self.guard_book.for_caller(call.client, call.team)

    @property
    def policy_guards(self) -> Guards:
        """The policy's own settings: what applies to a caller with no scope of its own."""
        return self.guard_book.default

    def record(self, call: Call, now: float | None = None) -> None:
        """Write the call's one row (once), keeping the bodies the policy keeps. Never raises: it is
        how every transport and every failure path records a call, the last resort included."""
        self.inflight.discard(call.id)
        if call.recorded:
            return
        call.recorded = True
        if call.latency_ms is None:
            call.latency_ms = ((now if now is not None else time.time()) - call.started) * 1000
        audit = self.policy.audit
        if audit.bodies == "none":
            call.request_body = call.response_body = None
        for name in ("request_body", "response_body"):
            value = getattr(call, name)
            if value is not None and len(value) > audit.max_body_chars:
                cap = audit.max_body_chars
                setattr(call, name, value[:cap] + f"...[truncated {len(value) - cap} chars]")
        if self.anomaly is not None:
            try:
                self.anomaly.observe(call)  # before the row is made: a spike it finds is noted on it
            except Exception:
                log.error("anomaly: call %s could not be counted", call.id, exc_info=True)
        try:
            record = call.to_record(self.policy.mode, bodies=audit.bodies != "none")
            record.policy_hash = self.policy_hash
            with contextlib.suppress(Exception):  # a row without its scope beats no row
                record.guards = self.guards(call).scope
            self.writer.submit(record)
        except Exception:
            log.critical("audit: the record of call %s could not be submitted", call.id, exc_info=True)
        if self.metrics is not None:
            try:
                self.metrics.on_call(call)
            except Exception:
                log.error("metrics: call %s could not be counted", call.id, exc_info=True)
        if self.tracer is not None:
            try:
                self.tracer.finish(call, call.started + call.latency_ms / 1000)
            except Exception:
                log.error("telemetry: the span of call %s could not be ended", call.id, exc_info=True)

    def answer_stages(self, guards: Guards, pseudonyms: dict[str, str]) -> tuple[list[Stage], int]:
        """The rewriting stages for one answer under the call's guard settings, and how many of them
        the audited text has passed.

        The output guard reads what the provider produced, the moderator judges it sentence by
        sentence; the pseudonym restorer then puts the user's values back. The audit keeps the text
        before the restorer: no user PII in the store.
        """
        stages: list[Stage] = []
        out = guards.output
        if out is not None:
            monitor = not self.enforcing
            stages.append(OutputGuard(guards.secrets_detector, guards.pii_detector,
                                      secrets_action="monitor" if monitor else out.secrets,
                                      pii_action="monitor" if monitor else out.pii))
        if guards.moderation is not None and guards.moderation_detector is not None:
            stages.append(Moderator.for_policy(guards.moderation_detector, guards.moderation,
                                               monitor=not self.enforcing))
        audited = len(stages)
        if pseudonyms:
            stages.append(PseudonymRestorer(pseudonyms))
        return stages, audited
