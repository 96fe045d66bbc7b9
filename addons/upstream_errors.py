"""An unreachable or failing upstream gets a 502 in the provider's own shape, not mitmproxy's HTML.

mitmproxy 12 sends its own 502 page when the upstream connection fails and ignores a response set
in the `error` hook. `install()` wraps one method so that an answer set there is sent instead
(the change proposed upstream in mitmproxy PR #7999); everything else keeps mitmproxy's behaviour.
"""

from __future__ import annotations

import logging

from mitmproxy import flow as mflow
from mitmproxy import http
from mitmproxy.proxy.layers import http as layers_http

from addons.flows import call_of, client_gone, error_response

log = logging.getLogger(__name__)

_original = layers_http.HttpStream.handle_protocol_error


def _handle_protocol_error(self, event):
    flow = self.flow
    answered_upstream_failure = (
        isinstance(event, layers_http.ResponseProtocolError)
        and self.client_state != self.state_errored
        and self.server_state not in (self.state_done, self.state_errored)
        and not (flow.response is not None and flow.response.stream)
        and call_of(flow) is not None
    )
    if not answered_upstream_failure:
        return (yield from _original(self, event))
    before = flow.response
    flow.error = mflow.Error(event.message)
    yield layers_http.HttpErrorHook(flow)
    if flow.response is not None and flow.response is not before:
        yield from self.send_response()
        return
    if (yield from self.check_killed(False)):
        return
    yield layers_http.SendHttp(event, self.context.client)
    self.server_state = self.state_errored
    flow.live = False
    yield layers_http.DropStream(self.stream_id)


def install() -> None:
    layers_http.HttpStream.handle_protocol_error = _handle_protocol_error  # type: ignore[method-assign]


class UpstreamErrorsAddon:
    name = "upstream_errors"

    def error(self, flow: http.HTTPFlow) -> None:
        call = call_of(flow)
        if call is None or (flow.response is not None and flow.response.stream):
            return
        if client_gone(flow):  # nobody to answer; the provider is not to blame
            call.note("client_disconnected")
            return
        reason = flow.error.msg if flow.error else "unknown error"
        call.add_error(f"upstream failed: {reason}")
        call.note("upstream_failed")
        target = call.upstream or call.host
        flow.response = error_response(
            call, 502, "upstream_failed",
            f"douane could not get an answer from {call.provider.name} at {target}: {reason}")
