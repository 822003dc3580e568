"""``VaultMaster``'s hook dispatch, in process: what runs without a task, and in which order."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from mitmproxy import ctx, http, options
from mitmproxy.proxy import mode_servers

from sidecar.master import VaultMaster


class Probe:
    """Records each flow hook with the task it ran in; ``request`` is a coroutine that sleeps
    before it sets a header, so the upstream sees the header only if the hook was awaited."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, asyncio.Task | None]] = []
        self.listening = asyncio.Event()
        self.address: tuple[str, int] | None = None

    def running(self) -> None:
        self.address = ctx.master.addons.get("proxyserver").listen_addrs()[0][:2]
        self.listening.set()

    def _saw(self, hook: str) -> None:
        self.seen.append((hook, asyncio.current_task()))

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        self._saw("requestheaders")

    async def request(self, flow: http.HTTPFlow) -> None:
        await asyncio.sleep(0.01)
        flow.request.headers["x-probe"] = "awaited"
        self._saw("request")

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        self._saw("responseheaders")

    def response(self, flow: http.HTTPFlow) -> None:
        self._saw("response")


async def _echo_probe_header(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A keep-alive HTTP/1.1 upstream answering each request with its ``x-probe`` header."""
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return
        lines = head.decode().split("\r\n")
        probe = next((v for k, _, v in (x.partition(": ") for x in lines) if k == "x-probe"), "")
        body = probe.encode() or b"missing"
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()


@pytest.fixture
async def proxied(tmp_path, monkeypatch) -> AsyncIterator[tuple[Probe, int, tuple[str, int]]]:
    monkeypatch.setattr(mode_servers, "ProxyConnectionHandler", mode_servers.ProxyConnectionHandler)
    monkeypatch.setattr(http.MessageData, "__post_init__", http.MessageData.__post_init__)
    upstream = await asyncio.start_server(_echo_probe_header, "127.0.0.1", 0)
    master = VaultMaster(
        options.Options(mode=["regular@127.0.0.1:0"], confdir=str(tmp_path), rawtcp=False)
    )
    probe = Probe()
    master.addons.add(probe)
    running = asyncio.create_task(master.run())
    try:
        await asyncio.wait_for(probe.listening.wait(), 30)
        assert probe.address is not None
        yield probe, upstream.sockets[0].getsockname()[1], probe.address
    finally:
        connections = master.addons.get("proxyserver").connections
        for _ in range(500):
            if not connections:
                break
            await asyncio.sleep(0.01)
        master.shutdown()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(running, 10)
        upstream.close()


async def _get(reader, writer, port: int) -> bytes:
    writer.write(
        f"GET http://127.0.0.1:{port}/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    return await reader.readexactly(length)


async def test_plain_hooks_run_without_a_task_and_coroutine_hooks_are_awaited(proxied):
    """Two requests on one connection: each plain hook runs in the task that read the event
    raising it (the same task both times), the coroutine one in a task of its own."""
    probe, port, (host, proxy_port) = proxied
    reader, writer = await asyncio.open_connection(host, proxy_port)
    try:
        bodies = [await asyncio.wait_for(_get(reader, writer, port), 10) for _ in range(2)]
    finally:
        writer.close()
        await writer.wait_closed()
    assert bodies == [b"awaited", b"awaited"]
    hooks = [hook for hook, _ in probe.seen]
    assert hooks == ["requestheaders", "request", "responseheaders", "response"] * 2
    first, second = probe.seen[:4], probe.seen[4:]
    for (hook, task), (_, again) in zip(first, second, strict=True):
        if hook == "request":
            assert task is not again  # each awaited hook gets a task of its own
        else:
            assert task is again, f"{hook} ran in a task of its own"
