"""A mitmproxy ``Master`` carrying only the addons the vault proxy needs.

mitmproxy's ``DumpMaster`` loads about 35 addons (playback, map-local/remote, modify-body/headers,
sticky cookies, anticache, blocklist, save, HAR, onboarding, scripts, ...). mitmproxy calls every
hook on every addon in the chain, and after each flow hook it sends an ``update`` hook through the
whole chain again, so each request on a keep-alive connection paid for about 300 addon calls that
did nothing. Profiling showed that dispatch as the largest single cost of the proxy.

This master keeps only what a regular (explicit) proxy with TLS interception runs on:

- ``Core``: validates options and provides the built-in commands mitmproxy itself calls.
- ``Block``: refuses clients from public addresses (``block_global``), for a proxy bound to a
  pod address.
- ``Proxyserver``: the listeners and connection handlers.
- ``NextLayer``: picks the protocol layer of every connection (HTTP, TLS, ...).
- ``TlsConfig``: the leaf certificates for clients and the verified TLS to upstreams.
- ``DisableH2C``: strips h2c upgrade headers that the proxy could not follow.
- ``ErrorCheck``: exits the process when startup logs an error (e.g. the port is taken).

Left out on purpose: the onboarding app (it would answer requests for ``mitm.it`` itself), the
dumper and event log (they would print headers holding real values), flow files, scripts,
playback and every request/response rewriting addon.
"""

from __future__ import annotations

from mitmproxy import master, options
from mitmproxy.addons import (
    block,
    core,
    disable_h2c,
    errorcheck,
    next_layer,
    proxyserver,
    tlsconfig,
)


class VaultMaster(master.Master):
    """The smallest set of mitmproxy addons that runs the vault proxy; ours are added after."""

    def __init__(self, opts: options.Options) -> None:
        super().__init__(opts, with_termlog=False)
        self.addons.add(
            core.Core(),
            block.Block(),
            proxyserver.Proxyserver(),
            next_layer.NextLayer(),
            tlsconfig.TlsConfig(),
            disable_h2c.DisableH2C(),
            errorcheck.ErrorCheck(),
        )
