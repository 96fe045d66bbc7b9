"""Thin mitmproxy addons, one per stage of a call's way through; the logic lives in douane/."""

from __future__ import annotations

from addons.access import AccessAddon
from addons.answer import AnswerAddon
from addons.audit import AuditAddon
from addons.classify import ClassifyAddon
from addons.identity import IdentityAddon
from addons.meter import MeterAddon
from addons.prompt_guard import PromptGuardAddon
from addons.router import RouterAddon
from addons.shadow import ShadowAIAddon
from addons.upstream_errors import UpstreamErrorsAddon, install
from douane.gateway import Gateway


def build(gw: Gateway) -> list[object]:
    """The addons in the order their hooks must run for each flow."""
    install()
    return [
        IdentityAddon(gw),
        ShadowAIAddon(gw),
        ClassifyAddon(gw),
        AccessAddon(gw),
        PromptGuardAddon(gw),
        RouterAddon(gw),
        UpstreamErrorsAddon(),
        AnswerAddon(gw),
        MeterAddon(gw),  # after Answer: settles from the usage it read; before Audit: the row has the cost
        AuditAddon(gw),
    ]
