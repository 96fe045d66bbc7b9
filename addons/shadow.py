"""Shadow AI: CONNECTs to AI services the policy does not name. Blocked or recorded, never intercepted."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from mitmproxy import http

from addons.identity import IDENTITY_KEY
from douane.audit import AuditRecord
from douane.call import new_call_id
from douane.gateway import Gateway
from douane.shadow import is_ai_host, is_public_ip


class ShadowAIAddon:
    name = "shadow_ai"

    def __init__(self, gw: Gateway):
        self.gw = gw

    def http_connect(self, flow: http.HTTPFlow) -> None:
        rule = self.gw.policy.shadow_ai
        host, port = flow.request.host, flow.request.port
        if (flow.response and flow.response.status_code == 407) or self.gw.providers.match(host, port) is not None:
            return
        if is_ai_host(host, rule.hosts):
            action, name = rule.action, f"shadow_ai.{rule.action}"
            why = f"{host} is an AI service this policy does not allow ({name})"
        elif is_public_ip(host):
            action, name = rule.bare_ips, f"shadow_ai.bare_ips.{rule.bare_ips}"
            why = (f"{host} is an IP address, not a host name, so douane cannot tell whether it is an AI "
                   f"provider ({name}); connect by host name, or set shadow_ai.bare_ips: allow")
        else:
            return
        if action == "allow":
            return
        blocked = action == "block" and self.gw.enforcing
        who = flow.metadata.get(IDENTITY_KEY)
        call_id = new_call_id()
        if blocked:
            flow.response = http.Response.make(
                403, f"douane: {why}\n".encode(), {"content-type": "text/plain", "x-douane-request-id": call_id})
        self.gw.writer.submit(AuditRecord(
            id=call_id, ts=datetime.fromtimestamp(flow.request.timestamp_start or time.time(), UTC),
            client=who.client if who else "anonymous", team=who.team if who else None,
            provider="shadow", endpoint="connect", method="CONNECT", host=host, stream=False,
            status=403 if blocked else 200, decision="blocked" if blocked else "allowed",
            reason=name, mode=self.gw.policy.mode, policy_hash=self.gw.policy_hash))
