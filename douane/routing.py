"""Routing decisions: which route and fallback rule a call matches, and the attempts they make.

Pure logic over the policy and the canonical request; addons/router.py applies it to flows.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from douane import translate
from douane.call import Call
from douane.meter.pricing import Pricer
from douane.meter.tokens import estimate_input_tokens
from douane.policy.model import Fallback, Match, Policy, Route
from douane.providers import ProviderSpec
from douane.relay import Attempt
from douane.translate import CHAT_ENDPOINTS

if TYPE_CHECKING:
    from douane.gateway import Gateway

__all__ = ["CHAT_ENDPOINTS", "KEY_HEADERS", "Facts", "attempt_for", "cheapest", "choose_route", "facts_of",
           "first_fallback", "first_route", "key_headers", "matches", "outgoing_headers", "pool_origins", "set_model",
           "target_url"]

KEY_HEADERS = ("authorization", "x-api-key", "x-goog-api-key", "api-key")


@dataclass(frozen=True)
class Facts:
    team: str | None
    client: str
    provider: str
    model: str | None
    endpoint: str | None
    input_tokens: int


def matches(when: Match, f: Facts) -> bool:
    if when.team is not None and when.team != f.team:
        return False
    if when.client is not None and when.client != f.client:
        return False
    if when.provider is not None and when.provider != f.provider:
        return False
    if when.endpoint is not None and when.endpoint != f.endpoint:
        return False
    if when.model is not None and (f.model is None or not fnmatch.fnmatchcase(f.model, when.model)):
        return False
    if when.min_input_tokens is not None and f.input_tokens < when.min_input_tokens:
        return False
    return not (when.max_input_tokens is not None and f.input_tokens > when.max_input_tokens)


def first_route(policy: Policy, f: Facts) -> tuple[int, Route] | None:
    for i, route in enumerate(policy.routes):
        if matches(route.when, f):
            return i, route
    return None


def first_fallback(policy: Policy, f: Facts) -> tuple[int, Fallback] | None:
    for i, rule in enumerate(policy.fallbacks):
        if matches(rule.when, f):
            return i, rule
    return None


def facts_of(gw: Gateway, call: Call) -> Facts:
    """What routes and fallbacks match on, the input estimate computed once per call."""
    if call.estimated_tokens is None:
        call.estimated_tokens = estimate_input_tokens(call.request, call.request_bytes or 0)
    return Facts(call.team, call.client, call.provider.name, call.model_requested, call.endpoint,
                 call.estimated_tokens)


def choose_route(gw: Gateway, call: Call) -> tuple[ProviderSpec, str | None, str | None]:
    """(target provider, model, upstream override) after the first matching route, noted on the call;
    in monitor mode the route is only noted, and the call goes where it was sent."""
    if call.request is None or not gw.policy.routes:
        return call.provider, call.model, None
    hit = first_route(gw.policy, facts_of(gw, call))
    if hit is None:
        return call.provider, call.model, None
    i, route = hit
    target = gw.providers.by_name(route.set_provider) if route.set_provider else call.provider
    model = call.model
    if route.set_model == "cheapest":
        team = gw.policy.teams.get(call.team or "")
        req = call.request
        model = cheapest(route.among or [], team.models if team else None, gw.pricer, target.name,
                         facts_of(gw, call).input_tokens, req.max_tokens,
                         gw.policy.metering.default_max_output_tokens) or model
    elif route.set_model:
        model = route.set_model
    if target.format != call.provider.format and call.endpoint not in CHAT_ENDPOINTS:
        call.note(f"routes[{i}]: not applied, endpoint {call.endpoint} does not translate")
        return call.provider, call.model, None
    change = f"{call.provider.name}/{call.model_requested} -> {target.name}/{model}"
    if not gw.enforcing:
        call.note(f"monitor: would apply routes[{i}]: {change}")
        return call.provider, call.model, None
    call.note(f"routes[{i}]: {change}" + (f" via {route.set_upstream}" if route.set_upstream else ""))
    return target, model, route.set_upstream


def cheapest(candidates: list[str], allowed: list[str] | None, pricer: Pricer, provider: str,
             input_tokens: int, max_output: int | None, default_output: int) -> str | None:
    """The candidate with the lowest worst-case cost that the team may use; unpriced ones are skipped."""
    best: tuple[float, str] | None = None
    for model in candidates:
        if allowed is not None and not any(fnmatch.fnmatchcase(model, g) for g in allowed):
            continue
        cost = pricer.worst_case(provider, model, input_tokens, max_output, default_output)
        if cost is not None and (best is None or cost.usd < best[0]):
            best = (cost.usd, model)
    return best[1] if best else None


_GEMINI_MODEL = re.compile(r"(/(?:models|tunedModels)/)([^/:?]+)(:)")


def set_model(fmt: str, body: dict[str, Any], path: str, model: str) -> str:
    """Put `model` in the body (OpenAI, Anthropic) or the path (Gemini); the new path."""
    if fmt == "gemini":
        return _GEMINI_MODEL.sub(lambda m: m.group(1) + model + m.group(3), path, count=1)
    body["model"] = model
    return path


def target_url(spec: ProviderSpec, path: str, upstream: str | None = None) -> str:
    base = upstream or spec.upstream or f"https://{spec.hosts[0]}"
    parts = urlsplit(base)
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}{path}"


# what belongs to one hop (RFC 9110 7.6.1), the proxy's credentials, and the Host the URL gives:
# none of it is the upstream's (HTTP/2 refuses connection-specific fields outright)
HOP_HEADERS = frozenset({"connection", "keep-alive", "proxy-connection", "proxy-authorization", "proxy-authenticate",
                         "te", "trailer", "transfer-encoding", "upgrade", "host"})


def outgoing_headers(headers: dict[str, str], drop: Iterable[str] = ()) -> dict[str, str]:
    """The client's headers as the relay sends them on: without hop-by-hop fields (and those the
    client's `connection` header names) nor `drop`."""
    named = {h.strip().lower() for h in headers.get("connection", headers.get("Connection", "")).split(",")}
    skip = HOP_HEADERS | named | {h.lower() for h in drop}
    return {k: v for k, v in headers.items() if k.lower() not in skip}


def pool_origins(policy: Policy, specs: Iterable[ProviderSpec]) -> list[str]:
    """scheme://host[:port] of every upstream the policy can send a call to (each provider's, and
    the routes' own), the ones the warm pool opens connections to."""
    bases = [spec.upstream or f"https://{spec.hosts[0]}" for spec in specs if spec.upstream or spec.hosts]
    bases += [route.set_upstream for route in policy.routes if route.set_upstream]
    origins = (urlsplit(base) for base in bases)
    return list(dict.fromkeys(f"{o.scheme}://{o.netloc}" for o in origins))


def attempt_for(spec: ProviderSpec, model: str | None, client_fmt: str, endpoint: str, body: dict[str, Any],
                path: str, client_headers: dict[str, str], key: str | None, same_provider: bool,
                upstream: str | None = None) -> Attempt | None:
    """The request one target gets: the client's own when formats agree, else a translation."""
    if spec.format == client_fmt:
        new_body = json.loads(json.dumps(body))
        new_path = set_model(spec.format, new_body, path, model) if model else path
        headers = dict(client_headers)
        if not same_provider or key is not None:  # the client's key belongs to the provider it called
            for h in KEY_HEADERS:
                headers.pop(h, None)
            new_path = re.sub(r"([?&])key=[^&]*&?", r"\1", new_path).rstrip("?&")
        translate_from = None
    else:
        if endpoint not in CHAT_ENDPOINTS or model is None:
            return None
        new_body, new_path = translate.request(client_fmt, endpoint, path, body, spec.format, model)
        headers = {"content-type": "application/json", "accept": "application/json"}
        translate_from = client_fmt
    headers = outgoing_headers(headers, drop=("content-length", "accept-encoding"))
    headers["accept-encoding"] = "identity"
    if spec.format == "anthropic":
        headers.setdefault("anthropic-version", "2023-06-01")
    url = target_url(spec, new_path, upstream)
    if key is not None:
        parts = urlsplit(url)
        headers.update(key_headers(spec.format, key, parts.hostname or "", parts.path))
    return Attempt(spec.name, spec.format, model, url, headers,
                   json.dumps(new_body, ensure_ascii=False, separators=(",", ":")).encode(), translate_from)


AZURE_HOSTS = (".openai.azure.com", ".cognitiveservices.azure.com", ".services.ai.azure.com")


def is_azure(host: str, path: str) -> bool:
    """Azure OpenAI: its API keys go in `api-key` (a Bearer token there must be an Entra ID token)."""
    return host.lower().rstrip(".").endswith(AZURE_HOSTS) or path.startswith("/openai/deployments/")


def key_headers(fmt: str, key: str, host: str = "", path: str = "") -> dict[str, str]:
    """The headers that carry a central key to where the call goes (`host` and `path` of the target)."""
    if fmt == "openai":
        if is_azure(host, path):
            return {"api-key": key}
        return {"authorization": f"Bearer {key}"}
    if fmt == "anthropic":
        return {"x-api-key": key}
    return {"x-goog-api-key": key}
