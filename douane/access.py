"""What the caller may use: per-team provider and model allow-lists (globs)."""

from __future__ import annotations

import fnmatch

from douane.call import Call
from douane.decision import Block
from douane.policy import Policy


def check_access(policy: Policy, call: Call) -> Block | None:
    if call.team is None:
        return None
    team = policy.teams.get(call.team)
    if team is None:
        return None
    if team.providers is not None and call.provider.name not in team.providers:
        return Block(403, f"teams.{call.team}.providers",
                     f"team {call.team} may not use provider {call.provider.name} "
                     f"(allowed: {', '.join(team.providers) or 'none'})")
    model = call.model_requested
    if model is not None and not any(fnmatch.fnmatchcase(model, g) for g in team.models):
        return Block(403, f"teams.{call.team}.models",
                     f"team {call.team} may not use model {model} (allowed: {', '.join(team.models)})")
    return None
