"""The JSON Schema of a policy file (`douane policy schema`), for editors that validate YAML as it
is typed (VS Code's YAML extension: see the README).

It is the pydantic model's own schema, with what the model accepts before validating spelt out
(fallback statuses may be written as numbers). Cross-field rules (a client's team must exist, a
route's provider must be defined) are beyond a schema: `douane policy check` gives the full verdict.
"""

from __future__ import annotations

from typing import Any

from douane import __version__
from douane.policy.model import Policy

DIALECT = "https://json-schema.org/draft/2020-12/schema"


def policy_schema() -> dict[str, Any]:
    schema = Policy.model_json_schema()
    schema.pop("title", None)
    fallback = schema["$defs"]["Fallback"]["properties"]["on"]
    fallback["items"] = {"type": ["string", "integer"]}  # `on: [429, 5xx]`: numbers are read as statuses
    return {"$schema": DIALECT, "title": "douane policy",
            "description": f"A douane {__version__} policy file. Cross-field rules (a client's team must exist) "
                           "are checked by `douane policy check`.", **schema}
