"""Send the call where the policy says: the provider's upstream, with its central key, asking for
an identity-encoded answer so that replies can be inspected."""

from __future__ import annotations

import json
import logging
from urllib.parse import urlsplit

from mitmproxy import http

from addons.flows import call_of
from douane.gateway import Gateway

log = logging.getLogger(__name__)

_KEY_HEADERS = ("authorization", "x-api-key", "x-goog-api-key", "api-key")


class RouterAddon:
    def __init__(self, gw: Gateway):
        self.gw = gw

    def request(self, flow: http.HTTPFlow) -> None:
        call = call_of(flow)
        if call is None or flow.response or flow.error:
            return
        req = flow.request
        if call.request is not None and self.gw.enforcing and call.provider.adapter.prepare_upstream(call.request):
            call.strip_usage_chunk = True
            call.body_changed = True
        if call.body_changed and call.request is not None:
            req.headers.pop("content-encoding", None)
            req.content = json.dumps(call.request.body, ensure_ascii=False, separators=(",", ":")).encode()
        key = self.gw.provider_keys.get(call.provider.name)
        if key is not None:
            self._inject_key(req, call.provider.format, key)
        req.headers["accept-encoding"] = "identity"
        if call.provider.upstream:
            target = urlsplit(call.provider.upstream)
            req.scheme = target.scheme
            req.host = target.hostname or req.host
            req.port = target.port or (443 if target.scheme == "https" else 80)
            prefix = target.path.rstrip("/")
            if prefix:
                req.path = prefix + req.path
        call.upstream = f"{req.scheme}://{req.host}:{req.port}"
        if self.gw.policy.audit.bodies == "redacted" and call.endpoint is not None:
            call.request_body = req.get_text(strict=False)

    @staticmethod
    def _inject_key(req: http.Request, fmt: str, key: str) -> None:
        """The client's key, in whatever place it put it, is dropped; the central one goes in."""
        for header in _KEY_HEADERS:
            req.headers.pop(header, None)
        if "key" in req.query:
            del req.query["key"]
        if fmt == "openai":
            req.headers["authorization"] = f"Bearer {key}"
        elif fmt == "anthropic":
            req.headers["x-api-key"] = key
        else:
            req.headers["x-goog-api-key"] = key
