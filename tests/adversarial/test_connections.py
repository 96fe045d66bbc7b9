"""Connections that hold douane without sending a request are closed; one address cannot hold them all."""

from __future__ import annotations

import socket
import ssl
import time
from typing import Any

from tests.e2e.conftest import Douane

BOUNDS = {"idle_timeout_s": 1, "request_body_timeout_s": 1, "max_connections_per_client": 4}


def closed_by_peer(sock: socket.socket, within: float = 10) -> bool:
    """True when the other end closes the connection within `within` seconds."""
    sock.settimeout(within)
    try:
        while True:
            if not sock.recv(4096):
                return True
    except TimeoutError:
        return False
    except (ConnectionResetError, ssl.SSLError, OSError):
        return True


def tunnel(d: Douane, host: str = "api.openai.com") -> ssl.SSLSocket:
    sock = socket.create_connection(("127.0.0.1", d.port), timeout=10)
    sock.sendall(f"CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 200"), head
    return ssl.create_default_context(cafile=d.bundle).wrap_socket(sock, server_hostname=host)


def test_connections_that_never_send_a_request_are_closed(make_douane: Any) -> None:
    d = make_douane(limits=BOUNDS)
    idle = [socket.create_connection(("127.0.0.1", d.port), timeout=10) for _ in range(3)]
    assert all(closed_by_peer(s) for s in idle), "held past limits.idle_timeout_s"


def test_a_request_body_sent_a_byte_at_a_time_is_cut_off_and_recorded(make_douane: Any, received: list) -> None:
    d = make_douane(limits=BOUNDS)
    tls = tunnel(d)
    tls.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nContent-Type: application/json\r\n"
                b"Content-Length: 1000\r\n\r\n{")
    started = time.monotonic()
    cut = False
    while time.monotonic() - started < 15 and not cut:
        try:
            tls.sendall(b" ")  # the slow client's behaviour, not a wait for the proxy
        except OSError:
            cut = True
            break
        tls.settimeout(0.3)
        try:
            cut = tls.recv(4096) == b""
        except TimeoutError:
            pass
        except (ssl.SSLError, OSError):
            cut = True
    assert cut, "a trickling body held the connection past limits.request_body_timeout_s"
    assert received == []
    rows = d.rows("SELECT * FROM requests", expect=1)
    assert rows[0]["status"] == 408 and "limits.request_body_timeout_s" in rows[0]["reason"]


def test_one_address_cannot_hold_more_than_its_share(make_douane: Any) -> None:
    d = make_douane(limits={**BOUNDS, "idle_timeout_s": 30})
    held = [socket.create_connection(("127.0.0.1", d.port), timeout=10) for _ in range(4)]
    extra = socket.create_connection(("127.0.0.1", d.port), timeout=10)
    assert closed_by_peer(extra, within=5), "a fifth connection from the same address must be refused"
    assert not closed_by_peer(held[0], within=0.2), "the first four are still served"
    for s in held:
        s.close()
