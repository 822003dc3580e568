"""The pod network of the kubelet double: a network namespace per pod, reached at a pod IP.

Each pod gets a network namespace of its own (held by a "pause" process: ``unshare --net``,
loopback up, a default route into a dead end) in which all its containers run, so
``127.0.0.1:3128`` and ``0.0.0.0:7681`` mean the same inside as in a real pod, and the egress
init container's iptables rules apply to that namespace only. The pod IP is an address of
``127.A.B.0/24`` (A and B random, so concurrent runs on one machine do not meet) on the host's
loopback:

- ingress: for every container port, a listener on ``<pod IP>:<port>`` on the host splices
  each connection to ``127.0.0.1:<port>`` inside the pod (a socket made in the pod's
  namespace with ``setns``), as a CNI would route it;
- egress: the double has no internet; ``egress_ports`` stand for it: inside every pod,
  ``127.0.0.1:<port>`` (and ``[::1]:<port>``) is spliced to the host's ``127.0.0.1:<port>``
  (the tests' TLS upstreams). Nothing else leaves a pod.

Everything runs on the kubelet's event loop thread (``setns`` changes only that thread, and
only for the instant a socket is made).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sandboxes.runner.relay import splice

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
# Loopback, and an eth0 with a default route into a dead end (a veth whose other end is in the
# same namespace and answers nothing): traffic to the outside is routed, so the egress rules
# decide, but nothing arrives anywhere; the double's only "internet" is the egress splice.
PAUSE = (
    "ip link set lo up && ip link add eth0 type veth peer name void0 && "
    "ip link set void0 up && ip link set eth0 up && ip addr add 10.255.255.2/24 dev eth0 && "
    "ip route add default dev eth0 && echo up && exec sleep infinity"
)


@dataclass
class PodNet:
    ip: str
    pause: asyncio.subprocess.Process
    netns: int  # an fd of the pod's network namespace
    servers: list[asyncio.Server] = field(default_factory=list)


class PodNetwork:
    def __init__(self, egress_ports: tuple[int, ...] = ()) -> None:
        self.egress_ports = egress_ports
        self.subnet = f"127.{random.randint(100, 254)}.{random.randint(0, 255)}"
        self._next = 2
        self._host_netns = -1

    def _allocate(self, ports: list[int]) -> str:
        """The next address of the subnet on which every port is free."""
        while self._next < 255:
            address = f"{self.subnet}.{self._next}"
            self._next += 1
            if all(_bindable(address, port) for port in ports):
                return address
        raise RuntimeError(f"pod IPs of {self.subnet}.0/24 are used up")

    def _socket_in(self, netns: int, family: int = socket.AF_INET) -> socket.socket:
        """A TCP socket of the pod's network namespace (this thread returns to its own)."""
        if self._host_netns < 0:
            self._host_netns = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        os.setns(netns, os.CLONE_NEWNET)
        try:
            made = socket.socket(family, socket.SOCK_STREAM)
        finally:
            os.setns(self._host_netns, os.CLONE_NEWNET)
        made.setblocking(False)
        return made

    async def start(self, ports: list[int], log: int) -> PodNet:
        """A new pod network with ingress for ``ports`` and the double's egress."""
        pause = await asyncio.create_subprocess_exec(
            *("setpriv", "--pdeathsig", "KILL", "--", "unshare", "--net", "--"),
            *("/bin/sh", "-c", PAUSE),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            start_new_session=True,
        )
        assert pause.stdout is not None
        if (await pause.stdout.readline()).strip() != b"up":
            raise RuntimeError("the pod network namespace did not come up")
        net = PodNet(
            self._allocate(ports), pause, os.open(f"/proc/{pause.pid}/ns/net", os.O_RDONLY)
        )
        for port in ports:
            net.servers.append(
                await asyncio.start_server(self._ingress(net, port), host=net.ip, port=port)
            )
        for port in self.egress_ports:
            for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
                listener = self._socket_in(net.netns, family)
                try:
                    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    listener.bind((address, port))
                    listener.listen(64)
                except OSError:  # no IPv6 in the namespace
                    listener.close()
                    continue
                net.servers.append(await asyncio.start_server(self._egress(port), sock=listener))
        return net

    async def connect_in(self, net: PodNet, port: int) -> socket.socket:
        """A connection to ``127.0.0.1:port`` inside the pod (probes use it too)."""
        inner = self._socket_in(net.netns)
        try:
            await asyncio.get_running_loop().sock_connect(inner, ("127.0.0.1", port))
        except OSError:
            inner.close()
            raise
        return inner

    async def probe(self, net: PodNet, probe: dict, ports: list[dict]) -> bool:
        """One ``httpGet`` or ``tcpSocket`` probe attempt, made from inside the pod's network
        (as the kubelet reaches the pod IP), never through the ingress splice."""
        handler = probe.get("httpGet") or probe.get("tcpSocket") or {}
        port = handler.get("port")
        if isinstance(port, str):
            port = {p.get("name"): p["containerPort"] for p in ports}.get(port)
        try:
            async with asyncio.timeout(probe.get("timeoutSeconds", 1)):
                connection = await self.connect_in(net, int(port))  # type: ignore[arg-type]
                reader, writer = await asyncio.open_connection(sock=connection)
                try:
                    if "httpGet" not in probe:
                        return True
                    request = (
                        f"GET {handler.get('path', '/')} HTTP/1.1\r\nHost: {net.ip}:{port}\r\n"
                        "Connection: close\r\n\r\n"
                    )
                    writer.write(request.encode())
                    await writer.drain()
                    status = (await reader.readline()).split()
                    return len(status) > 1 and 200 <= int(status[1]) < 400
                finally:
                    writer.close()
        except (OSError, TimeoutError, ValueError, TypeError):
            return False

    def _ingress(self, net: PodNet, port: int) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                inner = await self.connect_in(net, port)
            except OSError:
                writer.close()
                return
            inner_reader, inner_writer = await asyncio.open_connection(sock=inner)
            await splice(reader, writer, inner_reader, inner_writer)

        return handle

    def _egress(self, port: int) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                outer_reader, outer_writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                writer.close()
                return
            await splice(reader, writer, outer_reader, outer_writer)

        return handle

    async def stop(self, net: PodNet) -> None:
        for server in net.servers:
            server.close()
        with contextlib.suppress(ProcessLookupError):
            net.pause.kill()
        await net.pause.wait()
        os.close(net.netns)


def _bindable(address: str, port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((address, port))
        except OSError:
            return False
    return True
