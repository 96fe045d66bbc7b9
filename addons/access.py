"""What the caller may use: per-team provider and model allow-lists (globs)."""

from __future__ import annotations

import fnmatch

from mitmproxy import http

from addons.flows import call_of, refuse
from douane.gateway import Gateway


class AccessAddon:
    def __init__(self, gw: Gateway):
        self.gw = gw

    def request(self, flow: http.HTTPFlow) -> None:
        call = call_of(flow)
        if call is None or flow.response or flow.error or call.team is None:
            return
        team = self.gw.policy.teams.get(call.team)
        if team is None:
            return
        if team.providers is not None and call.provider.name not in team.providers:
            refuse(self.gw, flow, call, 403, f"teams.{call.team}.providers",
                   f"team {call.team} may not use provider {call.provider.name} "
                   f"(allowed: {', '.join(team.providers) or 'none'})")
            return
        model = call.model_requested
        if model is not None and not any(fnmatch.fnmatchcase(model, g) for g in team.models):
            refuse(self.gw, flow, call, 403, f"teams.{call.team}.models",
                   f"team {call.team} may not use model {model} (allowed: {', '.join(team.models)})")
