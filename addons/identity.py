"""Who is calling: proxy credentials checked on CONNECT (before any TLS interception); in base-URL
(reverse) mode, the douane key the SDK sends as its API key (douane.reverse)."""

from __future__ import annotations

import json
import logging
import weakref
from dataclasses import dataclass

from mitmproxy import connection, http
from mitmproxy.proxy.mode_specs import ReverseMode

from douane import reverse
from douane.gateway import Gateway
from douane.identity import Directory, Identity
from douane.routing import KEY_HEADERS

log = logging.getLogger(__name__)

IDENTITY_KEY = "douane.identity"
_CHALLENGE = {"Proxy-Authenticate": 'Basic realm="douane"', "content-type": "text/plain"}


@dataclass(frozen=True, slots=True)
class _Known:
    """Who a connection's CONNECT credentials named, in which policy's directory. After a reload the
    same credentials are asked again: a client removed or moved to another team is so at once, on
    connections opened before too."""

    credentials: str | None
    directory: Directory
    who: Identity


class IdentityAddon:
    name = "identity"

    def __init__(self, gw: Gateway):
        self.gw = gw  # its directory and providers are those of the flow's policy
        self.known: weakref.WeakKeyDictionary[connection.Client, _Known] = weakref.WeakKeyDictionary()

    def known_as(self, client: connection.Client, who: Identity) -> None:
        """Take the connection as `who`'s (`douane policy test`: a test names the caller, never its key)."""
        self.known[client] = _Known(None, self.gw.directory, who)

    def _challenge(self, flow: http.HTTPFlow) -> None:
        """407 with a challenge; in the provider's error shape when the target is a provider."""
        message = "douane: proxy credentials missing or wrong; use HTTPS_PROXY=http://CLIENT:KEY@host:port"
        spec = self.gw.providers.match(flow.request.host, flow.request.port)
        if spec is None:
            flow.response = http.Response.make(407, (message + "\n").encode(), _CHALLENGE)
        else:
            body = json.dumps(spec.adapter.error_body(407, message, "proxy_auth_required")).encode()
            flow.response = http.Response.make(407, body, {**_CHALLENGE, "content-type": "application/json"})

    def http_connect(self, flow: http.HTTPFlow) -> None:
        credentials = flow.request.headers.get("proxy-authorization")
        directory = self.gw.directory
        who = directory.identify(credentials)
        if who is None:
            self._challenge(flow)
            return
        self.known[flow.client_conn] = _Known(credentials, directory, who)
        flow.metadata[IDENTITY_KEY] = who

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response:
            return
        if isinstance(flow.client_conn.proxy_mode, ReverseMode):
            self._by_api_key(flow)
            return
        directory = self.gw.directory
        known = self.known.get(flow.client_conn)
        if known is None:  # a plain-HTTP proxy request carries its credentials itself
            who = directory.identify(flow.request.headers.get("proxy-authorization"))
        elif known.directory is directory:
            who = known.who
        else:  # the policy was reloaded since the CONNECT: whom do its credentials name now?
            who = directory.identify(known.credentials)
            if who is not None:
                self.known[flow.client_conn] = _Known(known.credentials, directory, who)
        if who is None:
            self._challenge(flow)
            return
        flow.request.headers.pop("proxy-authorization", None)
        flow.metadata[IDENTITY_KEY] = who

    def _by_api_key(self, flow: http.HTTPFlow) -> None:
        """Base-URL mode: when the policy names clients, the SDK's API key is the caller's douane key,
        which never goes further (the router puts the provider's central key in its place). When it
        names none, callers are anonymous and their key goes on, as through the proxy."""
        where = reverse.destination(flow.request.path, self.gw.providers)
        if where is None:
            return  # names no provider: classify answers it
        req = flow.request
        directory = self.gw.directory
        who = directory.identify_key(reverse.api_key(req.headers, req.query))
        if directory.required:
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
