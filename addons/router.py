"""Send the call where the policy says: routes (model, provider, upstream), fallbacks through the
relay, the provider's central key, and an identity-encoded answer so that replies can be inspected."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from mitmproxy import http

from addons.flows import call_of
from douane import jsonio
from douane.call import Call
from douane.gateway import Gateway
from douane.meter.tokens import estimate_input_tokens
from douane.policy.model import Fallback
from douane.providers import ProviderSpec
from douane.relay import Plan
from douane.routing import (
    CHAT_ENDPOINTS,
    KEY_HEADERS,
    Facts,
    attempt_for,
    cheapest,
    first_fallback,
    first_route,
    key_headers,
    set_model,
)

log = logging.getLogger(__name__)

PLAN_KEY = "douane.plan"


class RouterAddon:
    name = "router"

    def __init__(self, gw: Gateway):
        self.gw = gw

    async def running(self) -> None:
        await self.gw.relay.start()

    async def done(self) -> None:
        await self.gw.relay.stop()

    def request(self, flow: http.HTTPFlow) -> None:
        call = call_of(flow)
        if call is None or flow.response or flow.error:
            return
        req = flow.request
        if call.request is not None and self.gw.enforcing and call.provider.adapter.prepare_upstream(call.request):
            call.strip_usage_chunk = True  # the client did not ask for stream usage: douane did
            call.body_changed = True
        target, model, upstream = self._route(call)
        fallback = None
        if call.request is not None and self.gw.enforcing and self.gw.policy.fallbacks:
            hit = first_fallback(self.gw.policy, self._facts(call))
            fallback = hit[1] if hit else None
        crosses = target.format != call.provider.format
        if (fallback is not None or crosses) and self._relay(flow, call, target, model, upstream, fallback):
            return
        self._direct(flow, call, target, model, upstream)
        if self.gw.policy.audit.bodies == "redacted" and call.endpoint is not None and call.request_body is None:
            call.request_body = req.get_text(strict=False)

    def _facts(self, call: Call) -> Facts:
        if call.estimated_tokens is None:
            call.estimated_tokens = estimate_input_tokens(call.request, call.request_bytes or 0)
        return Facts(call.team, call.client, call.provider.name, call.model_requested, call.endpoint,
                     call.estimated_tokens)

    def _route(self, call: Call) -> tuple[ProviderSpec, str | None, str | None]:
        """(target provider, model, upstream override) after the first matching route."""
        if call.request is None or not self.gw.policy.routes:
            return call.provider, call.model, None
        hit = first_route(self.gw.policy, self._facts(call))
        if hit is None:
            return call.provider, call.model, None
        i, route = hit
        target = self.gw.providers.by_name(route.set_provider) if route.set_provider else call.provider
        model = call.model
        if route.set_model == "cheapest":
            team = self.gw.policy.teams.get(call.team or "")
            req = call.request
            model = cheapest(route.among or [], team.models if team else None, self.gw.pricer, target.name,
                             self._facts(call).input_tokens, req.max_tokens,
                             self.gw.policy.metering.default_max_output_tokens) or model
        elif route.set_model:
            model = route.set_model
        if target.format != call.provider.format and call.endpoint not in CHAT_ENDPOINTS:
            call.note(f"routes[{i}]: not applied, endpoint {call.endpoint} does not translate")
            return call.provider, call.model, None
        change = f"{call.provider.name}/{call.model_requested} -> {target.name}/{model}"
        if not self.gw.enforcing:
            call.note(f"monitor: would apply routes[{i}]: {change}")
            return call.provider, call.model, None
        call.note(f"routes[{i}]: {change}" + (f" via {route.set_upstream}" if route.set_upstream else ""))
        return target, model, route.set_upstream

    def _direct(self, flow: http.HTTPFlow, call: Call, target: ProviderSpec, model: str | None,
                upstream: str | None) -> None:
        req = flow.request
        if call.request is not None and model and model != call.model:
            req.path = set_model(target.format, call.request.body, req.path, model)
            call.model = call.served_model = model
            call.body_changed = True
        if (call.body_changed or call.forward_as_read) and call.request is not None:
            req.headers.pop("content-encoding", None)
            req.content = jsonio.dumps(call.request.body)
            if self.gw.policy.audit.bodies == "redacted":
                call.request_body = req.content.decode()
        key = self.gw.provider_keys.get(target.name)
        if key is not None or target is not call.provider:
            for header in KEY_HEADERS:  # the client's key, wherever it put it, is not for this target
                req.headers.pop(header, None)
            if "key" in req.query:
                del req.query["key"]
        req.headers["accept-encoding"] = "identity"
        destination = upstream or target.upstream or (f"https://{target.hosts[0]}" if target is not call.provider
                                                      else None)
        if destination:
            parts = urlsplit(destination)
            req.scheme = parts.scheme
            req.host = parts.hostname or req.host
            req.port = parts.port or (443 if parts.scheme == "https" else 80)
            if parts.path.rstrip("/"):
                req.path = parts.path.rstrip("/") + req.path
        if key is not None:  # where it goes decides how the key is carried (Azure's api-key)
            req.headers.update(key_headers(target.format, key, req.host, req.path))
        call.served_by = target.name
        call.upstream = f"{req.scheme}://{req.host}:{req.port}"

    def _relay(self, flow: http.HTTPFlow, call: Call, target: ProviderSpec, model: str | None,
               upstream: str | None, rule: Fallback | None) -> bool:
        """Hand the call to the relay with its list of attempts; False when nothing needs it."""
        assert call.request is not None and call.endpoint is not None
        req = flow.request
        body = call.request.body
        headers = dict(req.headers.items())
        fmt = call.provider.format
        attempts = []
        primary = attempt_for(target, model, fmt, call.endpoint, body, req.path, headers,
                              self.gw.provider_keys.get(target.name), target is call.provider, upstream)
        if primary is not None:
            attempts.append(primary)
        for to in rule.to if rule else []:
            spec = self.gw.providers.by_name(to.provider)
            more = attempt_for(spec, to.model or model, fmt, call.endpoint, body, req.path, headers,
                               self.gw.provider_keys.get(spec.name), spec is call.provider)
            if more is not None:
                attempts.append(more)
        if len(attempts) < 2 and (primary is None or primary.translate_from is None):
            return False
        plan = Plan(call.id, fmt, call.model_requested, call.stream, attempts,
                    rule.on if rule else [], rule.retries if rule else 0,
                    (rule.backoff_ms if rule else 0) / 1000, rule.first_byte_timeout_s if rule else 60.0)
        flow.metadata[PLAN_KEY] = plan
        req.scheme, req.host, req.port = "http", "127.0.0.1", self.gw.relay.port
        req.path = self.gw.relay.register(plan)
        req.headers.pop("content-encoding", None)
        req.content = primary.body if primary is not None else b"{}"
        call.upstream = "relay"
        if self.gw.policy.audit.bodies == "redacted":
            call.request_body = jsonio.dumps(body).decode()
        return True

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        self._settle_plan(flow)

    def response(self, flow: http.HTTPFlow) -> None:
        self._settle_plan(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._settle_plan(flow)

    def _settle_plan(self, flow: http.HTTPFlow) -> None:
        """Copy what the relay did into the call: who answered, with which model, what was tried."""
        plan: Plan | None = flow.metadata.pop(PLAN_KEY, None)
        call = call_of(flow)
        if plan is None or call is None:
            return
        self.gw.relay.plans.pop(plan.call_id, None)
        if plan.served is not None:
            call.served_by, call.served_model = plan.served.provider, plan.served.model
            call.upstream = plan.served.base
            if self.gw.policy.audit.bodies == "redacted":
                call.request_body = plan.served.body.decode("utf-8", "replace")
        if len(plan.tried) > 1 or plan.served is None:
            call.note("tried " + "; ".join(plan.tried))
        if plan.served is None:
            call.add_error("every upstream failed: " + "; ".join(plan.tried))
        elif plan.served is not plan.attempts[0]:
            call.note(f"fallback: answered by {plan.served.label}")
