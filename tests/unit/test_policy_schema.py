"""`douane policy schema`: a JSON Schema that accepts every shipped policy and catches what an
editor should flag as the user types (an unknown key, a wrong value)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from douane.cli import main

ROOT = Path(__file__).resolve().parents[2]
class Yaml12(yaml.SafeLoader):
    """YAML 1.2 booleans (true/false only), as editors read them: `on:` is a key, not True."""


Yaml12.yaml_implicit_resolvers = {k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
                                  for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
Yaml12.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|false)$"), list("tf"))

SHIPPED = [ROOT / "policies" / "default.yaml", *sorted((ROOT / "policies" / "examples").glob("*.yaml"))]


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    result = CliRunner().invoke(main, ["policy", "schema"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_policy_is_valid_under_the_schema(validator: jsonschema.Draft202012Validator,
                                                        path: Path) -> None:
    assert [e.message for e in validator.iter_errors(yaml.load(path.read_text(), Loader=Yaml12))] == []


@pytest.mark.parametrize(("policy", "flagged"), [
    ({"version": 1, "piii": {"action": "redact"}}, "'piii' was unexpected"),
    ({"version": 1, "pii": {"action": "shred"}}, "'shred' is not one of"),
    ({"version": 1, "mode": "enforce", "fail": "sometimes"}, "'sometimes' is not one of"),
    ({"version": 2}, "1 was expected"),
])
def test_what_an_editor_flags(validator: jsonschema.Draft202012Validator, policy: dict, flagged: str) -> None:
    assert any(flagged in e.message for e in validator.iter_errors(policy))
