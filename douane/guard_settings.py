"""Which guard settings apply to a call: the policy's, or its team's or client's own.

`teams.<team>.guards` and `clients[].guards` override the policy's `pii`, `injection`, `output`,
`sanitize` and `moderation` for that scope, key by key (douane.policy.model.GuardSettings): legal may block PII
while support pseudonymizes it. The settings of every scope are resolved once per policy, and the
detectors they need are built once per distinct setting (a PiiDetector per entity list and
threshold) and shared by the scopes that agree. Every stage that reads a guard setting reads it
from the call's Guards (Gateway.guards), never from the policy directly, and the audit row names
the scope whose settings applied.

A new guard is one more field on GuardSettings and Policy, of the same name (the settings are
merged by field name; stages read it as `guards.settings.<name>`) and, when it needs a detector,
one more line in GuardBook._build.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from pydantic import BaseModel

from douane.detect.injection import InjectionDetector
from douane.detect.moderation import ModerationDetector
from douane.detect.pii import PiiDetector
from douane.detect.prefix import Prefixes
from douane.detect.sanitize import Sanitizer
from douane.detect.second_tier import SecondTier, SecondTierError
from douane.detect.secrets import SecretsDetector
from douane.policy import Policy
from douane.policy.model import (
    GuardSettings,
    InjectionPolicy,
    ModerationPolicy,
    OutputPolicy,
    PiiPolicy,
    SanitizePolicy,
)

log = logging.getLogger(__name__)

POLICY_SCOPE = "policy"


class GuardConfigError(Exception):
    """A scope's guard settings are valid YAML but cannot be served (an unknown PII entity)."""


@dataclass(eq=False)
class Guards:
    """The guard settings that apply to one scope, with the detectors they need."""

    scope: str  # "policy", "teams.<team>.guards" or "clients.<client>.guards": the audit's `guards`
    settings: GuardSettings  # every guard's section, resolved (None: the guard is off)
    pii_detector: PiiDetector
    injection_detector: InjectionDetector | None
    secrets_detector: SecretsDetector | None
    # present when `sanitize` or `injection` is on: the injection scan reads what tag characters spell
    sanitizer: Sanitizer | None
    # present when `moderation` is on: the shipped model with the scope's deny patterns
    moderation_detector: ModerationDetector | None = None
    # a chat's earlier rewrites under these settings: another setting's must never be reused
    prefixes: Prefixes = field(default_factory=Prefixes)
    second_tier: SecondTier | None = None  # `injection.model: <folder>`

    @property
    def pii(self) -> PiiPolicy:
        assert self.settings.pii is not None, "the policy always has a pii section, and a scope cannot turn it off"
        return self.settings.pii

    @property
    def injection(self) -> InjectionPolicy | None:
        return self.settings.injection

    @property
    def output(self) -> OutputPolicy | None:
        return self.settings.output

    @property
    def sanitize(self) -> SanitizePolicy | None:
        return self.settings.sanitize

    @property
    def moderation(self) -> ModerationPolicy | None:
        return self.settings.moderation


def policy_settings(policy: Policy) -> GuardSettings:
    """The policy's own guard sections, as a scope's settings."""
    return GuardSettings.model_construct(**{name: getattr(policy, name) for name in GuardSettings.model_fields})


def overridden(base: GuardSettings, scope: GuardSettings | None) -> GuardSettings:
    """`base` with what `scope` gives: each section given overrides the base's key by key (a guard
    the base has off starts from its defaults); a section given as null turns the guard off."""
    if scope is None:
        return base
    update: dict[str, BaseModel | None] = {}
    for name in scope.model_fields_set:
        given: BaseModel | None = getattr(scope, name)
        inherited: BaseModel | None = getattr(base, name)
        if given is None or inherited is None:
            update[name] = given
        else:
            update[name] = inherited.model_copy(update={k: getattr(given, k) for k in given.model_fields_set})
    return base.model_copy(update=update)


class GuardBook:
    """Every scope's Guards for one policy. `detectors` may come from the book of an earlier policy:
    what is unchanged is not built again."""

    def __init__(self, policy: Policy, detectors: Detectors | None = None):
        self.policy = policy
        self.detectors = detectors if detectors is not None else Detectors()
        self._by_settings: dict[str, Prefixes] = {}
        base = policy_settings(policy)
        self.default = self._build(POLICY_SCOPE, base)
        self.teams: dict[str, Guards] = {}
        self.clients: dict[str, Guards] = {}
        for name, team in policy.teams.items():
            if team.guards is not None:
                self.teams[name] = self._build(f"teams.{name}.guards", overridden(base, team.guards))
        for client in policy.clients or []:
            if client.guards is not None:
                team_guards = policy.teams[client.team].guards if client.team in policy.teams else None
                settings = overridden(overridden(base, team_guards), client.guards)
                self.clients[client.name] = self._build(f"clients.{client.name}.guards", settings)

    def for_caller(self, client: str, team: str | None) -> Guards:
        """The most specific scope with settings of its own: the client's, its team's, the policy's."""
        return self.clients.get(client) or (self.teams.get(team) if team is not None else None) or self.default

    def scopes(self) -> list[Guards]:
        return [self.default, *self.teams.values(), *self.clients.values()]

    def _build(self, scope: str, settings: GuardSettings) -> Guards:
        pii = settings.pii
        assert pii is not None, "the policy always has a pii section, and a scope cannot turn it off"
        key = settings.model_dump_json()
        return Guards(
            scope=scope, settings=settings, pii_detector=self.detectors.pii(scope, pii),
            injection_detector=self.detectors.injection(settings.injection) if settings.injection is not None else None,
            secrets_detector=self.detectors.secrets() if settings.output is not None else None,
            sanitizer=self.detectors.sanitizer() if settings.sanitize or settings.injection else None,
            moderation_detector=self.detectors.moderation(settings.moderation) if settings.moderation else None,
            prefixes=self._by_settings.setdefault(key, Prefixes()),
            second_tier=self.detectors.second_tier(scope, settings.injection),
        )


class Detectors:
    """Detectors built once per distinct setting, shared by every scope (and policy) that needs them."""

    def __init__(self) -> None:
        self._pii: dict[tuple[tuple[str, ...], float], PiiDetector] = {}
        self._injection: dict[bool, InjectionDetector] = {}
        self._secrets: SecretsDetector | None = None
        self._sanitizer: Sanitizer | None = None
        self._moderation: dict[tuple[str, ...], ModerationDetector] = {}
        self._second_tiers: dict[str, SecondTier] = {}

    def pii(self, scope: str, setting: PiiPolicy) -> PiiDetector:
        key = (tuple(setting.entities), setting.score_threshold)
        detector = self._pii.get(key)
        if detector is None:
            detector = PiiDetector(setting.entities, setting.score_threshold)
            if detector.unsupported:
                log.warning("pii: no recognizer for %s (NER entities need an installed spaCy model); "
                            "they are not detected", ", ".join(detector.unsupported))
            self._pii[key] = detector
        if detector.unknown:
            where = "pii.entities" if scope == POLICY_SCOPE else f"{scope}.pii.entities"
            raise GuardConfigError(f"{where}: unknown entity {', '.join(detector.unknown)}; "
                                   f"known: {', '.join(detector.known_entities)}")
        return detector

    def injection(self, setting: InjectionPolicy) -> InjectionDetector:
        """One per use of the learned tier (`injection.model`): the rules alone, or with it (a
        folder is the second tier: the first is then the rules alone)."""
        learned = setting.model is True
        detector = self._injection.get(learned)
        if detector is None:
            detector = self._injection[learned] = InjectionDetector(model=learned)
        return detector

    def second_tier(self, scope: str, setting: InjectionPolicy | None) -> SecondTier | None:
        """The classifier in `injection.model: <folder>`, loaded once per folder."""
        if setting is None or not isinstance(setting.model, str):
            return None
        folder = setting.model
        if folder not in self._second_tiers:
            try:
                self._second_tiers[folder] = SecondTier(folder)
            except SecondTierError as e:
                where = "injection.model" if scope == POLICY_SCOPE else f"{scope}.injection.model"
                raise GuardConfigError(f"{where}: {e}") from None
            log.info("injection: second tier %s loaded (%s)", folder, self._second_tiers[folder].device)
        return self._second_tiers[folder]

    def secrets(self) -> SecretsDetector:
        if self._secrets is None:
            self._secrets = SecretsDetector()
        return self._secrets

    def sanitizer(self) -> Sanitizer:
        if self._sanitizer is None:
            self._sanitizer = Sanitizer()
        return self._sanitizer

    def moderation(self, setting: ModerationPolicy) -> ModerationDetector:
        """One per distinct deny list (the model itself is loaded once and shared)."""
        key = tuple(setting.deny)
        detector = self._moderation.get(key)
        if detector is None:
            detector = self._moderation[key] = ModerationDetector(setting.deny)
        return detector
