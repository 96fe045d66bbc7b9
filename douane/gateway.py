"""The running gateway's shared parts, built once from a policy and handed to every addon."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from douane.audit import AuditStore, AuditWriter
from douane.call import Call
from douane.detect.injection import InjectionDetector
from douane.detect.pii import PiiDetector
from douane.detect.prefix import Prefixes
from douane.detect.secrets import SecretsDetector
from douane.meter.limits import Limits
from douane.meter.pricing import Pricer
from douane.meter.state import MemoryState, RedisState, State
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


@dataclass
class Gateway:
    policy: Policy
    db_path: Path
    providers: ProviderTable = field(init=False)
    pii: PiiDetector = field(init=False)
    writer: AuditWriter = field(init=False)
    provider_keys: dict[str, str] = field(init=False)
    pricer: Pricer = field(init=False)
    limits: Limits = field(init=False)
    relay: Relay = field(init=False)
    secrets: SecretsDetector | None = field(init=False)
    injection: InjectionDetector | None = field(init=False)
    prefixes: Prefixes = field(init=False)
    inflight: set[str] = field(init=False, default_factory=set)  # ids of calls classified, not yet recorded
    draining: bool = field(init=False, default=False)  # stopping: answers say `connection: close`
    metrics: Metrics | None = field(init=False, default=None)  # counted per call when the admin port is on
    tracer: Tracer | None = field(init=False, default=None)  # a span per call when telemetry.otlp_endpoint is set
    anomaly: AnomalyGuard | None = field(init=False, default=None)  # with the policy's `anomaly:`

    def __post_init__(self) -> None:
        self.providers = ProviderTable(provider_specs(self.policy))
        self.pii = PiiDetector(self.policy.pii.entities, self.policy.pii.score_threshold)
        if self.pii.unknown:
            raise ConfigError(f"pii.entities: unknown entity {', '.join(self.pii.unknown)}; "
                              f"known: {', '.join(self.pii.known_entities)}")
        if self.pii.unsupported:
            log.warning("pii: no recognizer for %s (NER entities need an installed spaCy model); "
                        "they are not detected", ", ".join(self.pii.unsupported))
        self.writer = AuditWriter(AuditStore(self.db_path))
        self.provider_keys = central_keys(self.providers.specs)
        self.pricer = Pricer(self.policy.prices)
        self.limits = Limits(self.policy, make_state(self.policy))
        self.secrets = SecretsDetector() if self.policy.output is not None else None
        self.injection = InjectionDetector() if self.policy.injection is not None else None
        self.prefixes = Prefixes()
        self.relay = Relay(Breakers(self.policy.breaker.failures, self.policy.breaker.cooldown_s))
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
            self.writer.submit(call.to_record(self.policy.mode))
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

    def answer_stages(self, pseudonyms: dict[str, str]) -> tuple[list[Stage], int]:
        """The rewriting stages for one answer, and how many of them the audited text has passed.

        The output guard reads what the provider produced; the pseudonym restorer then puts the
        user's values back. The audit keeps the text between the two: no user PII in the store.
        """
        stages: list[Stage] = []
        out = self.policy.output
        if out is not None:
            monitor = not self.enforcing
            stages.append(OutputGuard(self.secrets, self.pii,
                                      secrets_action="monitor" if monitor else out.secrets,
                                      pii_action="monitor" if monitor else out.pii))
        audited = len(stages)
        if pseudonyms:
            stages.append(PseudonymRestorer(pseudonyms))
        return stages, audited
