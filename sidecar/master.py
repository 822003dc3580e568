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

``HookTable`` replaces mitmproxy's ``AddonManager`` dispatch on the hot path: mitmproxy looks up
every hook by ``getattr`` on every addon, through a generator and a context manager per addon,
and sends an ``update`` hook after each flow hook. The addon chain is fixed once the sidecar runs,
so the table resolves each hook name to its handlers once, calls them with the same error
handling, and skips ``update`` because no addon here handles it.

``InlineHookHandler`` replaces mitmproxy's connection handler so that a hook whose handlers are
all plain functions runs without an asyncio task of its own (see its docstring), and mitmproxy's
debug-only type checks of every request and response it builds are skipped. Together they took
about a fifth off the proxy's CPU per request (docs/performance.md). Both are installed process
wide when the master is built: the sidecar process runs one master.
"""

from __future__ import annotations

import collections
import importlib.util
import inspect
import logging
import sys
import types
from collections.abc import Callable
from typing import Any, cast


def _import_addon_modules_only() -> None:
    """Make ``mitmproxy.addons`` a bare package, so only the addon modules named below load.

    Its ``__init__`` imports every default addon (and with them Flask, ldap3 and the QUIC
    layers) to build ``default_addons()``, which this master never calls. That import was half
    of the sidecar's start-up, and start-up is on the path of every new session. Skipped when
    something in this process already imported the real package.
    """
    if "mitmproxy.addons" in sys.modules:
        return
    spec = importlib.util.find_spec("mitmproxy.addons")
    assert spec is not None and spec.submodule_search_locations is not None
    package = types.ModuleType(spec.name)
    package.__spec__ = spec
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules[spec.name] = package


_import_addon_modules_only()

from mitmproxy import addonmanager, exceptions, flow, hooks, http, master, options  # noqa: E402
from mitmproxy.addons import (  # noqa: E402
    block,
    core,
    disable_h2c,
    errorcheck,
    next_layer,
    proxyserver,
    tlsconfig,
)
from mitmproxy.proxy import commands, events, layer, mode_servers  # noqa: E402

logger = logging.getLogger("mitmproxy.addonmanager")


def _skip_message_type_checks(data: http.MessageData) -> None:
    """Stands in for ``MessageData.__post_init__``, which mitmproxy defines only ``if __debug__``.

    It checks every field of every request and response mitmproxy builds against its
    annotation, through ``typing.get_origin`` and friends: 9% of the sidecar's CPU per request,
    for a debugging check that ``python -O`` drops. ``-O`` itself is no answer: the installed
    packages have no ``.opt-1.pyc``, so every sidecar start would compile mitmproxy again.
    """


class HookTable(addonmanager.AddonManager):
    """An ``AddonManager`` that resolves each hook name to its handlers once per addon chain."""

    def __init__(self, master: master.Master) -> None:
        super().__init__(master)
        self.handlers: dict[str, tuple[Callable[..., Any], ...]] = {}
        self.synchronous: dict[str, bool] = {}

    def _forget(self) -> None:
        self.handlers.clear()
        self.synchronous.clear()

    def register(self, addon: Any) -> Any:
        self._forget()
        return super().register(addon)

    def add(self, *addons: Any) -> None:
        super().add(*addons)
        self._forget()

    def remove(self, addon: Any) -> None:
        super().remove(addon)
        self._forget()

    def clear(self) -> None:
        super().clear()
        self._forget()

    def handlers_for(self, name: str) -> tuple[Callable[..., Any], ...]:
        found = self.handlers.get(name)
        if found is None:
            found = tuple(
                func
                for addon in addonmanager.traverse(self.chain)
                if callable(func := getattr(addon, name, None))
            )
            self.handlers[name] = found
        return found

    def runs_now(self, name: str) -> bool:
        """Whether every handler of hook ``name`` is a plain function (none is ``async``)."""
        found = self.synchronous.get(name)
        if found is None:
            found = not any(inspect.iscoroutinefunction(f) for f in self.handlers_for(name))
            self.synchronous[name] = found
        return found

    def run_now(self, event: hooks.Hook) -> None:
        """``trigger_event`` for a hook that ``runs_now``: its coroutine finishes on first step."""
        step = self.trigger_event(event)
        try:
            step.send(None)
        except StopIteration:
            return
        step.close()
        raise RuntimeError(f"a handler of the {event.name} hook returned an awaitable")

    async def trigger_event(self, event: hooks.Hook) -> None:
        """Like ``AddonManager.trigger_event``: an addon error is logged and the next addon still
        runs; ``AddonHalt`` ends the dispatch."""
        handlers = self.handlers_for(event.name)
        if not handlers:
            return
        args = event.args()
        for func in handlers:
            try:
                result = func(*args)
                if result is not None and inspect.isawaitable(result):
                    await result
            except exceptions.AddonHalt:
                return
            except exceptions.OptionsError:
                raise
            except Exception as error:
                logger.error(f"Addon error: {error}", exc_info=True)

    async def handle_lifecycle(self, event: hooks.Hook) -> None:
        await self.trigger_event(event)
        message = event.args()[0]
        if isinstance(message, flow.Flow) and self.handlers_for("update"):
            await self.trigger_event(hooks.UpdateHook([message]))


class InlineHookHandler(mode_servers.ProxyConnectionHandler):
    """mitmproxy's connection handler, with hooks that have only plain-function handlers run
    without a task.

    For every hook a layer raises (``requestheaders``, ``request``, ``responseheaders``,
    ``response``, the TLS and next-layer hooks: four per request, about a dozen more per new
    connection), mitmproxy starts an asyncio task that runs the addons, then takes the event
    lock again to hand the layer its ``HookCompleted``: a turn of the event loop, a task and
    four coroutine frames each time. Here such a hook is held back while the event that raised
    it is processed, then run, in the order raised, and its completion handed to the layer at
    once; the order is one mitmproxy's tasks could have run in. A hook with a coroutine handler
    (``http_connect`` and ``server_connect`` resolve names) still gets its task. No addon here
    intercepts flows, so no flow waits to be resumed.
    """

    def __init__(self, *args: Any) -> None:
        self.held: collections.deque[commands.StartHook] = collections.deque()
        super().__init__(*args)

    @property
    def hooks(self) -> HookTable:
        return cast(HookTable, self.master.addons)  # a VaultMaster's

    @property
    def layer(self) -> layer.Layer:
        return self._layer

    @layer.setter
    def layer(self, top: layer.Layer) -> None:
        """Every layer mitmproxy sets as the top one holds back the hooks that run now."""
        handle_event = top.handle_event
        table = self.hooks

        def hold_inline_hooks(event: events.Event) -> layer.CommandGenerator[None]:
            for command in handle_event(event):
                if isinstance(command, commands.StartHook) and table.runs_now(command.name):
                    self.held.append(command)
                else:
                    yield command

        top.handle_event = hold_inline_hooks  # type: ignore[method-assign]
        self._layer = top

    async def server_event(self, event: events.Event) -> None:
        await super().server_event(event)
        table = self.hooks
        while self.held:
            hook = self.held.popleft()
            table.run_now(hook)
            if hook.blocking:
                await super().server_event(events.HookCompleted(hook))


class VaultMaster(master.Master):
    """The smallest set of mitmproxy addons that runs the vault proxy; ours are added after."""

    def __init__(self, opts: options.Options) -> None:
        super().__init__(opts, with_termlog=False)
        self.options.changed.disconnect(self.addons._configure_all)
        self.addons = HookTable(self)
        mode_servers.ProxyConnectionHandler = InlineHookHandler  # type: ignore[misc]
        http.MessageData.__post_init__ = _skip_message_type_checks  # type: ignore[method-assign]
        self.addons.add(
            core.Core(),
            block.Block(),
            proxyserver.Proxyserver(),
            next_layer.NextLayer(),
            tlsconfig.TlsConfig(),
            disable_h2c.DisableH2C(),
            errorcheck.ErrorCheck(),
        )
