"""The running gateway's shared parts, built once from a policy and handed to every addon."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from douane import clock
from douane.audit import AuditStore, AuditWriter
from douane.audit.chain import valid_instance_id
from douane.audit.settings import AuditSettings, Retention
from douane.audit.signing import Signer
from douane.call import Call
from douane.guard_settings import Detectors, GuardBook, GuardConfigError, Guards
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
    """Provider keys the proxy injects, read once at start-up from the environment or a file."""
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


@dataclass
class Gateway:
    policy: Policy
    db_path: Path
    providers: ProviderTable = field(init=False)
    guard_book: GuardBook = field(init=False)
    writer: AuditWriter = field(init=False)
    provider_keys: dict[str, str] = field(init=False)
    pricer: Pricer = field(init=False)
    limits: Limits = field(init=False)
    relay: Relay = field(init=False)
    detectors: Detectors = field(init=False, default_factory=Detectors)
    clock: clock.Clock = field(init=False)
    inflight: set[str] = field(init=False, default_factory=set)  # ids of calls classified, not yet recorded
    draining: bool = field(init=False, default=False)  # stopping: answers say `connection: close`
    # the policy in force, on every audit row; a policy reload sets it again (with the policy)
    policy_hash: str = field(init=False, default="")
    metrics: Metrics | None = field(init=False, default=None)  # counted per call when the admin port is on
    tracer: Tracer | None = field(init=False, default=None)  # a span per call when telemetry.otlp_endpoint is set
    anomaly: AnomalyGuard | None = field(init=False, default=None)  # with the policy's `anomaly:`

    def __post_init__(self) -> None:
        try:
            self.clock = clock.from_environment()
        except ValueError as e:
            raise ConfigError(str(e)) from None
        self.providers = ProviderTable(provider_specs(self.policy))
        try:
            self.guard_book = GuardBook(self.policy, self.detectors)
        except GuardConfigError as e:
            raise ConfigError(str(e)) from None
        self.writer = AuditWriter(AuditStore(self.db_path), settings=audit_settings(self.policy))
        self.policy_hash = policy_digest(self.policy)
        self.provider_keys = central_keys(self.providers.specs)
        self.pricer = Pricer(self.policy.prices)
        self.limits = Limits(self.policy, make_state(self.policy), self.clock)
        self.relay = Relay(Breakers(self.policy.breaker.failures, self.policy.breaker.cooldown_s,
                                    clock=self.clock.monotonic))
        if self.policy.telemetry.otlp_endpoint is not None:
            from douane.ops.tracing import Tracer

            self.tracer = Tracer(self.policy.telemetry)
        if self.policy.anomaly is not None:
            from douane.ops.anomaly import AnomalyGuard, SharedAnomalies

            self.anomaly = AnomalyGuard(self.policy.anomaly, on_finding=self._count_anomaly)
            if isinstance(self.limits.state, RedisState):
                self.anomaly.shared = SharedAnomalies(self.limits.state.client, self.limits.state.prefix)

    def _count_anomaly(self, finding: Finding, action: str) -> None:
        if self.metrics is not None:
            self.metrics.anomalies.add((finding.subject[0], finding.signal, action))

    @property
    def enforcing(self) -> bool:
        return self.policy.enforcing

    def guards(self, call: Call) -> Guards:
        """The guard settings that apply to this call (its client's, its team's or the policy's), with
        their detectors: the one place every stage reads them from."""
        return self._guard_book().for_caller(call.client, call.team)

    @property
    def policy_guards(self) -> Guards:
        """The policy's own settings: what applies to a caller with no scope of its own."""
        return self._guard_book().default

    def _guard_book(self) -> GuardBook:
        book = self.guard_book
        if book.policy is not self.policy:  # the policy was replaced (a reload): its own settings
            book = self.guard_book = GuardBook(self.policy, self.detectors)
        return book

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
