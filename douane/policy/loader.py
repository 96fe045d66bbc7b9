"""Load policy YAML (a file or a folder of them) into a Policy, with errors that name file and line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from douane.policy.model import Policy
from douane.providers.registry import BUILTIN_PROVIDERS

Path_ = tuple[str | int, ...]
Where = tuple[str, int]  # (file, 1-based line)


@dataclass(frozen=True)
class PolicyIssue:
    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.field or '(document)'}: {self.message}"


class PolicyError(Exception):
    """Every problem found in a policy, each with file, line and field."""

    def __init__(self, issues: list[PolicyIssue]):
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


def policy_files(path: str | Path) -> list[Path]:
    p = Path(path)
    if p.is_dir():
        files = sorted([*p.glob("*.yaml"), *p.glob("*.yml")])
        if not files:
            raise PolicyError([PolicyIssue(str(p), 0, "", "folder holds no *.yaml policy file")])
        return files
    if not p.exists():
        raise PolicyError([PolicyIssue(str(p), 0, "", "no such file or folder; pass --policy PATH")])
    return [p]


def _construct(node: yaml.Node, path: Path_, file: str, where: dict[Path_, Where]) -> Any:
    """Build plain Python data from a YAML node, noting where each value stands."""
    where[path] = (file, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            # Policy keys are names: `on:` (fallbacks) must not become True, as YAML 1.1 would have it.
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else yaml.safe_load(yaml.serialize(key_node))
            if key in out:
                raise PolicyError([PolicyIssue(file, key_node.start_mark.line + 1, _dotted((*path, key)),
                                               "key appears twice")])
            where[(*path, key)] = (file, key_node.start_mark.line + 1)
            out[key] = _construct(value_node, (*path, key), file, where)
            where[(*path, key)] = (file, key_node.start_mark.line + 1)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, (*path, i), file, where) for i, item in enumerate(node.value)]
    return yaml.safe_load(yaml.serialize(node))


def _merge(acc: dict, new: dict, path: Path_, acc_where: dict[Path_, Where],
           new_where: dict[Path_, Where]) -> None:
    """Merge one file's document into the others: mappings merge, lists append, scalars must not clash."""
    for key, value in new.items():
        sub = (*path, key)
        if key not in acc:
            acc[key] = value
            for p, w in new_where.items():
                if p[: len(sub)] == sub:
                    acc_where[p] = w
        elif isinstance(acc[key], dict) and isinstance(value, dict):
            _merge(acc[key], value, sub, acc_where, new_where)
        elif isinstance(acc[key], list) and isinstance(value, list):
            offset = len(acc[key])
            acc[key].extend(value)
            for p, w in new_where.items():
                index = p[len(sub)] if p[: len(sub)] == sub and len(p) > len(sub) else None
                if isinstance(index, int):
                    acc_where[(*sub, index + offset, *p[len(sub) + 1:])] = w
        elif acc[key] == value:
            continue  # the same value twice (every file says `version: 1`) is no clash
        else:
            first = acc_where.get(sub, ("?", 0))
            file, line = new_where.get(sub, ("?", 0))
            raise PolicyError([PolicyIssue(file, line, _dotted(sub),
                                           f"already set in {first[0]}:{first[1]}; set it in one file only")])


def _dotted(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _locate(path: Path_, where: dict[Path_, Where], default_file: str) -> Where:
    for n in range(len(path), -1, -1):
        if path[:n] in where:
            return where[path[:n]]
    return (default_file, 0)


def load_policy(path: str | Path) -> Policy:
    files = policy_files(path)
    doc: dict[str, Any] = {}
    where: dict[Path_, Where] = {}
    for f in files:
        try:
            node = yaml.compose(f.read_text(encoding="utf-8"))
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            line = mark.line + 1 if mark else 0
            raise PolicyError([PolicyIssue(str(f), line, "", f"YAML syntax: {e.problem or e}")]) from None
        except (OSError, UnicodeDecodeError) as e:
            raise PolicyError([PolicyIssue(str(f), 0, "", f"cannot read: {e}")]) from None
        if node is None:
            continue
        file_where: dict[Path_, Where] = {}
        data = _construct(node, (), str(f), file_where)
        if not isinstance(data, dict):
            raise PolicyError([PolicyIssue(str(f), 1, "", "a policy file is a mapping of keys (version, mode, ...)")])
        _merge(doc, data, (), where, file_where)
    try:
        policy = Policy.model_validate(doc)
    except ValidationError as e:
        issues = []
        for err in e.errors():
            loc = tuple(err["loc"])
            file, line = _locate(loc, where, str(files[0]))
            got = f" (got {err['input']!r})" if err["type"] not in ("missing", "extra_forbidden") else ""
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            issues.append(PolicyIssue(file, line, _dotted(loc), msg + got))
        raise PolicyError(issues) from None
    issues = [PolicyIssue(*_locate(p, where, str(files[0])), _dotted(p), msg) for p, msg in cross_check(policy)]
    if issues:
        raise PolicyError(issues)
    return policy


def cross_check(policy: Policy) -> list[tuple[Path_, str]]:
    """Checks that span sections: names that must refer to something defined."""
    problems: list[tuple[Path_, str]] = []
    for name, cfg in policy.providers.items():
        if name not in BUILTIN_PROVIDERS:
            if not cfg.hosts:
                problems.append((("providers", name, "hosts"), "a custom provider needs hosts: [...]"))
            if not cfg.format:
                problems.append((("providers", name, "format"),
                                 "a custom provider needs format: openai|anthropic|gemini"))
        if cfg.api_key_env and cfg.api_key_file:
            problems.append((("providers", name), "give api_key_env or api_key_file, not both"))
    known_providers = set(BUILTIN_PROVIDERS) | set(policy.providers)
    for i, client in enumerate(policy.clients or []):
        if client.team not in policy.teams:
            problems.append((("clients", i, "team"), f"team {client.team!r} is not defined under teams:"))
    names = [c.name for c in policy.clients or []]
    for i, client in enumerate(policy.clients or []):
        if names.count(client.name) > 1 and names.index(client.name) != i:
            problems.append((("clients", i, "name"), f"client {client.name!r} is defined twice"))
    for tname, team in policy.teams.items():
        for j, prov in enumerate(team.providers or []):
            if prov not in known_providers:
                problems.append((("teams", tname, "providers", j), f"unknown provider {prov!r}"))
    for i, route in enumerate(policy.routes):
        if route.set_provider and route.set_provider not in known_providers:
            problems.append((("routes", i, "set_provider"), f"unknown provider {route.set_provider!r}"))
    for i, fb in enumerate(policy.fallbacks):
        for j, target in enumerate(fb.to):
            if target.provider not in known_providers:
                problems.append((("fallbacks", i, "to", j, "provider"), f"unknown provider {target.provider!r}"))
    return problems
