"""Who is calling: proxy credentials checked on CONNECT (before any TLS interception); in base-URL
(reverse) mode, the douane key the SDK sends as its API key (douane.reverse)."""

from __future__ import annotations

import json
import logging
import weakref

from mitmproxy import connection, http
from mitmproxy.proxy.mode_specs import ReverseMode

from douane import reverse
from douane.gateway import Gateway
from douane.identity import Directory, Identity
from douane.routing import KEY_HEADERS

log = logging.getLogger(__name__)

IDENTITY_KEY = "douane.identity"
_CHALLENGE = {"Proxy-Authenticate": 'Basic realm="douane"', "content-type": "text/plain"}


class IdentityAddon:
    name = "identity"

    def __init__(self, gw: Gateway):
        self.directory = Directory(gw.policy)
        self.providers = gw.providers
        self.known: weakref.WeakKeyDictionary[connection.Client, Identity] = weakref.WeakKeyDictionary()

    def _challenge(self, flow: http.HTTPFlow) -> None:
        """407 with a challenge; in the provider's error shape when the target is a provider."""
        message = "douane: proxy credentials missing or wrong; use HTTPS_PROXY=http://CLIENT:KEY@host:port"
        spec = self.providers.match(flow.request.host, flow.request.port)
        if spec is None:
            flow.response = http.Response.make(407, (message + "\n").encode(), _CHALLENGE)
        else:
            body = json.dumps(spec.adapter.error_body(407, message, "proxy_auth_required")).encode()
            flow.response = http.Response.make(407, body, {**_CHALLENGE, "content-type": "application/json"})

    def http_connect(self, flow: http.HTTPFlow) -> None:
        who = self.directory.identify(flow.request.headers.get("proxy-authorization"))
        if who is None:
            self._challenge(flow)
            return
        self.known[flow.client_conn] = who
        flow.metadata[IDENTITY_KEY] = who

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response:
            return
        if isinstance(flow.client_conn.proxy_mode, ReverseMode):
            self._by_api_key(flow)
            return
        who = self.known.get(flow.client_conn)
        if who is None:  # a plain-HTTP proxy request carries its credentials itself
            who = self.directory.identify(flow.request.headers.get("proxy-authorization"))
            if who is None:
                self._challenge(flow)
                return
        flow.request.headers.pop("proxy-authorization", None)
        flow.metadata[IDENTITY_KEY] = who

    def _by_api_key(self, flow: http.HTTPFlow) -> None:
        """Base-URL mode: when the policy names clients, the SDK's API key is the caller's douane key,
        which never goes further (the router puts the provider's central key in its place). When it
        names none, callers are anonymous and their key goes on, as through the proxy."""
        where = reverse.destination(flow.request.path, self.providers)
        if where is None:
            return  # names no provider: classify answers it
        req = flow.request
        who = self.directory.identify_key(reverse.api_key(req.headers, req.query))
        if self.directory.required:
            for header in KEY_HEADERS:
                req.headers.pop(header, None)
            if "key" in req.query:
                del req.query["key"]
        if who is None:
            message = ("douane: API key missing or wrong; in base-URL mode the SDK's API key is your douane key, "
                       "CLIENT:KEY")
            body = json.dumps(where.spec.adapter.error_body(401, message, "invalid_api_key")).encode()
            flow.response = http.Response.make(401, body, {"content-type": "application/json"})
            return
        flow.metadata[IDENTITY_KEY] = who
