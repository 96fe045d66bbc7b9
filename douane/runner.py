"""Run mitmproxy in-process with douane's addons."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass

from mitmproxy import exceptions, options
from mitmproxy.tools.dump import DumpMaster

from douane.gateway import Gateway
from douane.mcp import McpServers

log = logging.getLogger(__name__)


@dataclass
class ListenConfig:
    host: str
    port: int
    certs: str
    sets: tuple[str, ...] = ()


def make_master(gw: Gateway, listen: ListenConfig) -> DumpMaster:
    import addons

    opts = options.Options()
    master = DumpMaster(opts, with_termlog=True, with_dumper=False)
    master.addons.add(*addons.build(gw))
    opts.update(
        listen_host=listen.host,
        listen_port=listen.port,
        confdir=listen.certs,
        # lazy: the request hook may send the call elsewhere before any upstream connection is made
        connection_strategy="lazy",
        # intercept provider hosts only; everything else is tunnelled untouched
        allow_hosts=gw.providers.allow_hosts() + McpServers(gw.policy).allow_hosts(),
        termlog_verbosity="info",
    )
    if listen.sets:
        try:
            opts.set(*listen.sets)
        except exceptions.OptionsError as e:
            raise ValueError(f"--set: {e} (list the options with: .venv/bin/mitmdump --options)") from None
        if opts.deferred:
            raise ValueError(f"--set: unknown mitmproxy option(s): {', '.join(opts.deferred)}")
    return master


async def serve(gw: Gateway, listen: ListenConfig, on_ready: Callable[[], None] | None = None) -> None:
    """Build the master inside the running loop (mitmproxy needs one), then serve until a signal."""
    master = make_master(gw, listen)
    if on_ready is not None:
        on_ready()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, master.shutdown)
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    settle_garbage_collector()
    await master.run()


def settle_garbage_collector() -> None:
    """Keep the collector off the start-up heap, and run it less often.

    Presidio, phonenumbers' metadata and mitmproxy leave ~1M long-lived objects that every full
    collection would walk again (tens of ms, in the middle of someone's call); gc.freeze() sets
    them aside. Each call allocates a few thousand objects that die with it: a larger first
    generation collects them in fewer, equally cheap passes.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_FIRST_GENERATION, 20, 20)


GC_FIRST_GENERATION = 20_000
