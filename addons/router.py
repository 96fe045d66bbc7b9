"""Send the call where the policy says: routes (model, provider, upstream), fallbacks through the
relay, the provider's central key, and an identity-encoded answer so that replies can be inspected.
With `upstream.pool`, every other LLM call also goes out through the relay, on its warm shared
connections, as the very request the direct path would have sent."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from mitmproxy import ctx, http

from addons.flows import call_of
from douane import jsonio
from douane.call import Call
from douane.gateway import Gateway
from douane.policy.model import Fallback
from douane.providers import ProviderSpec
from douane.relay import Attempt, Plan
from douane.relay.pool import upstream_tls
from douane.routing import (
    KEY_HEADERS,
    attempt_for,
    choose_route,
    facts_of,
    first_fallback,
    key_headers,
    outgoing_headers,
    pool_origins,
    set_model,
)

log = logging.getLogger(__name__)

PLAN_KEY = "douane.plan"


class RouterAddon:
    name = "router"

    def __init__(self, gw: Gateway):
        self.gw = gw

    async def running(self) -> None:
        opts = ctx.options
        await self.gw.relay.start(upstream_tls(opts.ssl_insecure, opts.ssl_verify_upstream_trusted_ca,
                                               opts.ssl_verify_upstream_trusted_confdir))
        assert self.gw.relay.warmer is not None
        self.gw.relay.warmer.keep_warm(self._warm_origins)

    def _warm_origins(self) -> list[str]:
        """Read each round, so that a reload turning `upstream.pool` on or off counts."""
        policy = self.gw.current.policy
        return pool_origins(policy, self.gw.current.providers.specs) if policy.upstream.pool else []

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
        target, model, upstream = choose_route(self.gw, call)
        fallback = None
        if call.request is not None and self.gw.enforcing and self.gw.policy.fallbacks:
            hit = first_fallback(self.gw.policy, facts_of(self.gw, call))
            fallback = hit[1] if hit else None
        crosses = target.format != call.provider.format
        if (fallback is not None or crosses) and self._relay(flow, call, target, model, upstream, fallback):
            return
        self._direct(flow, call, target, model, upstream)
        if self.gw.policy.audit.bodies == "redacted" and call.endpoint is not None and call.request_body is None:
            call.request_body = req.get_text(strict=False)
        if self.gw.policy.upstream.pool:
            self._pool(flow, call, target)

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

    def _pool(self, flow: http.HTTPFlow, call: Call, target: ProviderSpec) -> None:
        """Send the request `_direct` made ready through the relay's warm pool, unchanged: the same
        URL (classify has put the provider's host in it in every mode), headers, key and bytes. Only
        LLM calls (a POST whose body douane read); the rest keep mitmproxy's connection."""
        req = flow.request
        if req.method != "POST" or call.request is None or call.endpoint is None:
            return
        headers = outgoing_headers(dict(req.headers.items()), drop=("content-length",))
        attempt = Attempt(target.name, target.format, call.served_model or call.model, req.url, headers,
                          req.raw_content or b"")
        plan = Plan(call.id, call.provider.format, call.model_requested, call.stream, [attempt], [],
                    first_byte_timeout=None, pooled=True)
        flow.metadata[PLAN_KEY] = plan
        req.scheme, req.host, req.port = "http", "127.0.0.1", self.gw.relay.port
        req.path = self.gw.relay.register(plan)

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
        if plan.pooled:  # the direct path's own request: `upstream` and the body are already the call's
            if plan.served is None:
                call.add_error("upstream failed: " + "; ".join(plan.tried))
                call.note("upstream_failed")
            return
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

