"""Shadow AI at CONNECT time: AI hosts the policy does not name, and bare public IP addresses, which
name no host that a provider could be matched on (douane.shadow, addons/shadow.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mitmproxy.test import tflow

from addons.shadow import ShadowAIAddon
from douane.audit import AuditRecord
from douane.gateway import Gateway
from douane.policy.model import Policy
from douane.shadow import is_public_ip


class Rows:
    """An audit writer that keeps what it is handed."""

    def __init__(self) -> None:
        self.records: list[AuditRecord] = []

    def submit(self, record: AuditRecord) -> None:
        self.records.append(record)


def connect(gw: Gateway, host: str, port: int = 443) -> tuple[int | None, list[AuditRecord]]:
    flow = tflow.tflow()
    flow.request.method, flow.request.host, flow.request.port = "CONNECT", host, port
    ShadowAIAddon(gw).http_connect(flow)
    return (flow.response.status_code if flow.response else None), gw.writer.records  # type: ignore[attr-defined]


def gateway(tmp_path: Path, **policy: object) -> Gateway:
    return Gateway(Policy.model_validate({"version": 1, **policy}), tmp_path / "a.duckdb", writer=Rows())  # type: ignore[arg-type]


@pytest.mark.parametrize(("host", "public"), [
    ("8.8.8.8", True), ("142.250.74.10", True), ("[2606:4700::6810:84e5]", True), ("2606:4700::6810:84e5", True),
    ("127.0.0.1", False), ("10.1.2.3", False), ("192.168.0.7", False), ("172.16.5.4", False), ("169.254.1.1", False),
    ("::1", False), ("[fd00::1]", False), ("192.0.2.1", False), ("api.openai.com", False), ("8.8.8.8.nip.io", False),
    # what the system resolver also reads as an address (inet_aton): an attacker's way around a plain parse
    ("134744072", True), ("0x8080808", True), ("8.8.2056", True), ("010.010.010.010", True), ("8.8.8.8.", True),
    ("::ffff:8.8.8.8", True), ("2130706433", False), ("0", False), ("cafe.de", False), ("deadbeef", False),
])
def test_which_hosts_are_bare_public_ips(host: str, public: bool) -> None:
    assert is_public_ip(host) is public


def test_a_connect_to_a_public_ip_is_refused_by_default_and_recorded(tmp_path: Path) -> None:
    status, rows = connect(gateway(tmp_path), "142.250.74.10")
    assert status == 403
    assert [(r.provider, r.host, r.decision, r.reason) for r in rows] == \
        [("shadow", "142.250.74.10", "blocked", "shadow_ai.bare_ips.block")]


def test_a_public_ip_written_as_one_number_is_refused_too(tmp_path: Path) -> None:
    status, rows = connect(gateway(tmp_path), "134744072")
    assert status == 403 and [r.reason for r in rows] == ["shadow_ai.bare_ips.block"]


@pytest.mark.parametrize("host", ["127.0.0.1", "10.0.0.8", "localhost", "example.com"])
def test_private_addresses_and_host_names_are_not_judged(tmp_path: Path, host: str) -> None:
    assert connect(gateway(tmp_path), host) == (None, [])


def test_monitor_records_and_allow_lets_it_through(tmp_path: Path) -> None:
    status, rows = connect(gateway(tmp_path, shadow_ai={"bare_ips": "monitor"}), "8.8.8.8")
    assert status is None and [(r.decision, r.reason) for r in rows] == [("allowed", "shadow_ai.bare_ips.monitor")]
    assert connect(gateway(tmp_path, shadow_ai={"bare_ips": "allow"}), "8.8.8.8") == (None, [])


def test_the_policy_in_monitor_mode_records_without_blocking(tmp_path: Path) -> None:
    status, rows = connect(gateway(tmp_path, mode="monitor"), "8.8.8.8")
    assert status is None and [r.decision for r in rows] == ["allowed"]


def test_a_provider_the_policy_places_at_an_ip_is_not_shadow(tmp_path: Path) -> None:
    gw = gateway(tmp_path, providers={"onprem": {"hosts": ["203.0.113.9", "8.8.4.4"], "format": "openai"}})
    assert connect(gw, "8.8.4.4") == (None, [])


def test_an_ai_host_keeps_its_own_rule(tmp_path: Path) -> None:
    status, rows = connect(gateway(tmp_path, shadow_ai={"action": "block", "bare_ips": "allow"}), "api.mistral.ai")
    assert status == 403 and [r.reason for r in rows] == ["shadow_ai.block"]
