"""Load policy YAML (a file or a folder of them) into a Policy, with errors that name file and line.

Every problem is collected into one report: YAML syntax (which stops that file only), keys set
twice, clashes between files, schema errors and cross-references. The work is bounded: a file
may not nest deeper than MAX_DEPTH nor expand through aliases to more than MAX_ALIAS_VALUES
values, so a few hundred hostile bytes cannot keep the loader busy.
"""

from __future__ import annotations

import contextlib
import difflib
import gc
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from douane.policy.model import Policy
from douane.providers.registry import BUILTIN_PROVIDERS

Path_ = tuple[str | int, ...]
Where = tuple[str, int]  # (file, 1-based line)

# A policy's own nesting is ~6 levels deep; anything near this is an accident or an attack.
MAX_DEPTH = 64
# Values a file may add by repeating anchored ones: sharing a ten-model list among a thousand teams
# is 10,000; the 350-byte "billion laughs" file would be 387 million.
MAX_ALIAS_VALUES = 100_000

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: ~10x faster to parse
_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_COLLECTION_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")


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
        try:
            files = sorted([*p.glob("*.yaml"), *p.glob("*.yml")])
        except OSError as e:
            raise PolicyError([PolicyIssue(str(p), 0, "", f"cannot list the folder: {e}")]) from None
        if not files:
            raise PolicyError([PolicyIssue(str(p), 0, "", "folder holds no *.yaml or *.yml file; pass a policy file or "
                                           "a folder of them")])
        return files
    if not p.exists():
        raise PolicyError([PolicyIssue(str(p), 0, "", "no such file or folder; pass --policy PATH")])
    return [p]


class _Unreadable:
    """Stands for a value the loader refused (a Python tag, say): reported once, never again by the schema."""

    def __repr__(self) -> str:
        return "<unreadable>"


_UNREADABLE = _Unreadable()


class _Refused(Exception):
    """A file that cannot be read further (too deep, too large through aliases)."""

    def __init__(self, issue: PolicyIssue):
        self.issue = issue


class _Builder:
    """Plain data from one file's node tree, noting where each value stands; problems are collected."""

    def __init__(self, file: str):
        self.file = file
        self.where: dict[Path_, Where] = {}
        self.issues: list[PolicyIssue] = []
        self._constructor = yaml.constructor.SafeConstructor()
        self._built: set[int] = set()  # collections built once: building one again is an alias expanding
        self._open: set[int] = set()  # collections being built: meeting one again is a loop
        self._repeating = 0  # > 0 while building a collection again: every value then counts
        self._repeated = 0

    def issue(self, node: yaml.Node, path: Path_, message: str) -> None:
        self.issues.append(PolicyIssue(self.file, node.start_mark.line + 1, _dotted(path), message))

    def build(self, node: yaml.Node, path: Path_) -> Any:
        line = node.start_mark.line + 1
        if isinstance(node, yaml.ScalarNode):
            if self._repeating:
                self._spend(line, path)
            self.where[path] = (self.file, line)
            return node.value if node.tag == _STR_TAG else self._scalar(node, path)
        node_id = id(node)
        if node_id in self._open:
            _, line = self.where.get(path, (self.file, line))  # the key's line, if any
            raise _Refused(PolicyIssue(self.file, line, _dotted(path), "an alias here refers to a value that "
                                       "contains itself; write the value out instead"))
        if len(path) > MAX_DEPTH:
            raise _Refused(PolicyIssue(self.file, line, _dotted(path[:3]) + "...",
                                       f"nested more than {MAX_DEPTH} levels deep; a policy needs a handful"))
        repeat = node_id in self._built
        if repeat or self._repeating:
            self._spend(line, path)
        self._built.add(node_id)
        self.where[path] = (self.file, line)
        if node.tag not in _COLLECTION_TAGS:
            self.issue(node, path, f"unsupported tag {node.tag}; a policy holds plain values: remove the tag")
            return _UNREADABLE
        self._open.add(node_id)
        self._repeating += repeat
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        finally:
            self._repeating -= repeat
            self._open.discard(node_id)

    def _spend(self, line: int, path: Path_) -> None:
        """Count a value that an alias repeats; past the budget the file is refused."""
        self._repeated += 1
        if self._repeated > MAX_ALIAS_VALUES:
            raise _Refused(PolicyIssue(self.file, line, _dotted(path),
                                       f"aliases expand this file past {MAX_ALIAS_VALUES:,} values "
                                       "(an alias bomb?); write shared values out or share fewer levels"))

    def _scalar(self, node: yaml.ScalarNode, path: Path_) -> Any:
        """A scalar YAML typed (a number, a boolean, null): built by PyYAML's safe constructor."""
        try:
            return self._constructor.construct_object(node)
        except yaml.constructor.ConstructorError:
            self.issue(node, path, f"unsupported tag {node.tag}; a policy holds plain values: remove the tag")
            return _UNREADABLE
        except (ValueError, TypeError, OverflowError) as e:  # e.g. an integer of 5,000 digits, `!!int abc`
            self.issue(node, path, f"cannot read {node.value[:40]!r} as {node.tag.rsplit(':', 1)[-1]}: {e}")
            return _UNREADABLE

    def _mapping(self, node: yaml.MappingNode, path: Path_) -> dict[str, Any]:
        out: dict[str, Any] = {}
        first_line: dict[str, int] = {}
        merges: list[yaml.Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merges.append(value_node)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.issue(key_node, path, "a key must be a plain name, not a list or a mapping")
                continue
            # Policy keys are names: `on:` (fallbacks) must not become True, as YAML 1.1 would have it.
            key, line = key_node.value, key_node.start_mark.line + 1
            if key in out:
                self.issue(key_node, (*path, key), f"key appears twice (first at line {first_line[key]}); "
                                                   "keep one")
                continue
            first_line[key] = line
            sub = (*path, key)
            self.where[sub] = (self.file, line)
            if not self._repeating and isinstance(value_node, yaml.ScalarNode) and value_node.tag == _STR_TAG:
                out[key] = value_node.value  # the common case, without a call
                continue
            out[key] = self.build(value_node, sub)
            self.where[sub] = (self.file, line)  # the key's line, not the value's
        for merge in merges:
            self._merge_in(out, merge, path)
        return out

    def _merge_in(self, out: dict[str, Any], merge: yaml.Node, path: Path_) -> None:
        """`<<: *anchor` (or a list of them): the anchored keys, where the mapping does not set them."""
        sources = merge.value if isinstance(merge, yaml.SequenceNode) else [merge]
        for source in sources:
            if not isinstance(source, yaml.MappingNode):
                self.issue(merge, path, "`<<` merges a mapping (or a list of mappings) given by an alias")
                return
            own, self.where = self.where, {}
            try:
                merged = self.build(source, path)
            finally:
                scratch, self.where = self.where, own
            added = {key: value for key, value in merged.items() if key not in out}
            out.update(added)
            depth = len(path)
            self.where.update((p, w) for p, w in scratch.items() if len(p) > depth and p[depth] in added)


_FileRead = tuple[dict[str, Any], dict[Path_, Where], list[PolicyIssue], bool]


def _read_file(f: Path) -> _FileRead:
    """One file's data, where each value stands, its problems, and whether it was read to its end."""
    name = str(f)

    def stopped(line: int, message: str) -> _FileRead:
        return {}, {}, [PolicyIssue(name, line, "", message)], False

    try:
        text = f.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        return stopped(0, f"cannot read: {e}")
    try:
        node = yaml.compose(text, Loader=_LOADER)
    except yaml.YAMLError as e:
        return stopped(_error_line(e, text), f"YAML syntax: {_yaml_problem(e)}; this file and references to "
                       "what it defines are not checked until it parses")
    except RecursionError:
        return stopped(0, f"YAML nested too deeply to read; a policy nests a handful of levels, not {MAX_DEPTH}")
    if node is None:
        return {}, {}, [], True
    if not isinstance(node, yaml.MappingNode):
        return stopped(node.start_mark.line + 1, "a policy file is a mapping of keys (version, mode, ...)")
    builder = _Builder(name)
    try:
        data = builder.build(node, ())
    except _Refused as refused:
        return {}, {}, [*builder.issues, refused.issue], False
    return data, builder.where, builder.issues, True


def _error_line(e: yaml.YAMLError, text: str) -> int:
    if isinstance(e, yaml.MarkedYAMLError):
        mark = e.problem_mark or e.context_mark  # where the parser gave up
        return mark.line + 1 if mark else 0
    position = getattr(e, "position", None)  # a ReaderError (a forbidden character) has a position only
    return text.count("\n", 0, position) + 1 if isinstance(position, int) else 0


def _yaml_problem(e: yaml.YAMLError) -> str:
    if isinstance(e, yaml.reader.ReaderError):
        return f"character #x{e.character:04x} is not allowed in YAML" if isinstance(e.character, int) \
            else "a byte that is not allowed in YAML"
    problem = getattr(e, "problem", None)
    context = getattr(e, "context", None)
    if context and problem:
        start = getattr(e, "context_mark", None)  # e.g. where an unclosed [ was opened
        context += f" started at line {start.line + 1}" if start is not None else ""
        text = f"{context}: {problem}"
    else:
        text = str(problem or e)
    return " ".join(text.split())


def _merge(acc: dict[str, Any], new: dict[str, Any], path: Path_, acc_where: dict[Path_, Where],
           new_where: dict[Path_, Where], offsets: dict[Path_, int], issues: list[PolicyIssue]) -> None:
    """Merge one file's document into the others: mappings merge, lists append, scalars must not clash.

    A clash keeps the first value and is reported; `offsets` notes where each appended list starts.
    """
    for key, value in new.items():
        sub = (*path, key)
        if key not in acc:
            acc[key] = value
        elif isinstance(acc[key], dict) and isinstance(value, dict):
            _merge(acc[key], value, sub, acc_where, new_where, offsets, issues)
        elif isinstance(acc[key], list) and isinstance(value, list):
            offsets[sub] = len(acc[key])
            acc[key].extend(value)
        elif acc[key] != value:  # the same value twice (every file says `version: 1`) is no clash
            first = acc_where.get(sub, ("?", 0))
            file, line = new_where.get(sub, ("?", 0))
            issues.append(PolicyIssue(file, line, _dotted(sub),
                                      f"already set in {first[0]}:{first[1]}; set it in one file only"))


def _rebase(path: Path_, offsets: dict[Path_, int]) -> Path_:
    """A path in one file -> the same value's path in the merged document (lists were appended)."""
    out: Path_ = ()
    for part in path:
        if isinstance(part, int):
            part += offsets.get(out, 0)
        out = (*out, part)
    return out


def _dotted(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _at(path: Path_, where: dict[Path_, Where]) -> str:
    file, line = _locate(path, where, "?")
    return f"{file}:{line}"


def _locate(path: Path_, where: dict[Path_, Where], default_file: str) -> Where:
    for n in range(len(path), -1, -1):
        if path[:n] in where:
            return where[path[:n]]
    return (default_file, 0)


def _read_policy(files: list[Path]) -> tuple[dict[str, Any], dict[Path_, Where], list[PolicyIssue], bool]:
    """The merged document of `files`, where each value stands, the problems so far, and whether
    every file was read to its end (references cannot be judged while one is missing)."""
    doc: dict[str, Any] = {}
    where: dict[Path_, Where] = {}
    issues: list[PolicyIssue] = []
    complete = True
    for f in files:
        data, file_where, file_issues, read_whole = _read_file(f)
        issues += file_issues
        complete = complete and read_whole
        offsets: dict[Path_, int] = {}
        _merge(doc, data, (), where, file_where, offsets, issues)
        if not where:
            where.update(file_where)
            continue
        for p, w in file_where.items():  # the first file to set a value keeps its place
            where.setdefault(_rebase(p, offsets) if offsets else p, w)
    return doc, where, issues, complete


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """A large policy allocates ~10 objects per line, all kept: collecting on the way only walks them."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load_policy(path: str | Path) -> Policy:
    """The policy at `path` (a file or a folder), or a PolicyError listing every problem found."""
    files = policy_files(path)
    with _collector_paused():
        return _load(files)


def _load(files: list[Path]) -> Policy:
    doc, where, issues, complete = _read_policy(files)
    first_file = str(files[0])
    policy = None
    try:
        policy = Policy.model_validate(doc)
    except ValidationError as e:
        issues += [_schema_issue(err, where, first_file) for err in e.errors() if err["input"] is not _UNREADABLE]
    if complete:
        issues += [PolicyIssue(*_locate(p, where, first_file), _dotted(p), msg) for p, msg in cross_check(doc, where)]
    if issues or policy is None:
        order = {str(f): i for i, f in enumerate(files)}
        raise PolicyError(sorted(issues, key=lambda i: (order.get(i.file, len(order)), i.line)))
    return policy


def _schema_issue(err: Any, where: dict[Path_, Where], default_file: str) -> PolicyIssue:
    """A pydantic error as `file:line: field: what is wrong`, in words a policy author can act on."""
    loc = tuple(err["loc"])
    file, line = _locate(loc, where, default_file)
    kind = err["type"]
    if kind == "extra_forbidden":
        return PolicyIssue(file, line, _dotted(loc), _unknown_key(loc))
    if kind == "missing":
        return PolicyIssue(file, line, _dotted(loc), "required: add this key")
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        model = _model_at(loc)
        keys = f" such as {', '.join(list(model.model_fields)[:4])}" if model else ""
        message = f"must be a mapping of keys{keys}"
    elif kind == "list_type":
        message = "must be a list: [a, b], or one `- item` per line"
    else:
        message = err["msg"].removeprefix("Value error, ")
    shown = repr(err["input"])
    return PolicyIssue(file, line, _dotted(loc), f"{message} (got {shown if len(shown) <= 80 else shown[:77] + '...'})")


def _unknown_key(loc: Path_) -> str:
    model = _model_at(loc[:-1])
    if model is None:
        return "unknown key"
    known = list(model.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    where = _dotted(loc[:-1]) or "the top level"
    return f"unknown key; {hint}{where} takes: {', '.join(known)}"


def _model_at(loc: Path_) -> type[BaseModel] | None:
    """The pydantic model that holds the value at `loc`: fields, list items and dict values followed."""
    annotation: Any = Policy
    for part in loc:
        annotation = _unwrap_optional(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(part) if isinstance(part, str) else None
            if field is None:
                return None
            annotation = field.annotation
        elif get_origin(annotation) in (list, dict):
            annotation = get_args(annotation)[-1]
        else:
            return None
    annotation = _unwrap_optional(annotation)
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _unwrap_optional(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def _mapping(value: Any) -> dict[str, Any]:
    """A section as a mapping, or empty when it has another shape (the schema check reports that)."""
    return value if isinstance(value, dict) else {}


def _items(value: Any) -> list[tuple[int, dict[str, Any]]]:
    """A list section's mapping items with their indexes; items of other shapes are the schema's to report."""
    return [(i, item) for i, item in enumerate(value) if isinstance(item, dict)] if isinstance(value, list) else []


def _when_refers(when: dict[str, Any], at: Path_, teams: Any, clients: set[str] | None,
                 providers: set[str]) -> list[tuple[Path_, str]]:
    """A rule's `when:` names a team, client and provider the policy defines (checked where the policy
    has a `teams:` or `clients:` section to check against). A misspelt name would make the rule match
    nothing, silently."""
    problems: list[tuple[Path_, str]] = []
    team, client, provider = when.get("team"), when.get("client"), when.get("provider")
    if isinstance(team, str) and isinstance(teams, dict) and team not in teams:
        problems.append(((*at, "team"), f"team {team!r} is not defined under teams: (the rule would match nothing)"))
    if isinstance(client, str) and clients is not None and client not in clients:
        problems.append(((*at, "client"), f"client {client!r} is not defined under clients: "
                                          "(the rule would match nothing)"))
    if isinstance(provider, str) and provider not in providers:
        problems.append(((*at, "provider"), f"unknown provider {provider!r} (the rule would match nothing)"))
    return problems


def cross_check(doc: dict[str, Any], where: dict[Path_, Where]) -> list[tuple[Path_, str]]:
    """Checks that span sections: names that must refer to something defined.

    Reads the merged document itself, not the validated Policy, so that these problems are reported
    together with the schema's; values of the wrong shape are skipped (the schema reports them).
    `where` places the other value a problem refers to.
    """
    problems: list[tuple[Path_, str]] = []
    providers = _mapping(doc.get("providers"))
    for name, cfg in providers.items():
        cfg = _mapping(cfg)
        if name not in BUILTIN_PROVIDERS:
            if not cfg.get("hosts"):
                problems.append((("providers", name, "hosts"), "a custom provider needs hosts: [...]"))
            if not cfg.get("format"):
                problems.append((("providers", name, "format"),
                                 "a custom provider needs format: openai|anthropic|gemini"))
        if cfg.get("api_key_env") and cfg.get("api_key_file"):
            problems.append((("providers", name), "give api_key_env or api_key_file, not both"))
    known_providers = set(BUILTIN_PROVIDERS) | set(providers)
    teams = doc.get("teams")
    first_of: dict[str, int] = {}
    for i, client in _items(doc.get("clients")):
        team = client.get("team")
        if isinstance(teams, dict | type(None)) and isinstance(team, str) and team not in (teams or {}):
            problems.append((("clients", i, "team"), f"team {team!r} is not defined under teams:"))
        client_name = client.get("name")
        if isinstance(client_name, str):
            first = first_of.setdefault(client_name, i)
            if first != i:
                problems.append((("clients", i, "name"), f"client {client_name!r} is defined twice (first as "
                                 f"clients[{first}] at {_at(('clients', first), where)}); give each client "
                                 "its own name"))
    for tname, team_cfg in _mapping(teams).items():
        team_providers = _mapping(team_cfg).get("providers")
        for j, prov in enumerate(team_providers if isinstance(team_providers, list) else []):
            if isinstance(prov, str) and prov not in known_providers:
                problems.append((("teams", tname, "providers", j), f"unknown provider {prov!r}"))
    client_names = set(first_of)
    for section in ("routes", "defaults", "fallbacks"):
        for i, rule in _items(doc.get(section)):
            problems += _when_refers(_mapping(rule.get("when")), (section, i, "when"), teams,
                                     client_names if isinstance(doc.get("clients"), list) else None,
                                     known_providers)
    for i, route in _items(doc.get("routes")):
        prov = route.get("set_provider")
        if isinstance(prov, str) and prov not in known_providers:
            problems.append((("routes", i, "set_provider"), f"unknown provider {prov!r}"))
    for i, fallback in _items(doc.get("fallbacks")):
        for j, target in _items(fallback.get("to")):
            prov = target.get("provider")
            if isinstance(prov, str) and prov not in known_providers:
                problems.append((("fallbacks", i, "to", j, "provider"), f"unknown provider {prov!r}"))
    return problems
