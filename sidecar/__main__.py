"""``python -m sidecar``: the vault sidecar process (docs/vault-protocol.md, "Starting it").

Builds a ``VaultMaster`` (mitmproxy with only the addons the proxy needs: no terminal log, no
dumper, no flow files) inside the running loop, with the per-sandbox CA in a private confdir,
upstream verification always on, our ``VaultAddon`` (requiring the proxy credential of
``--proxyauth-file`` when given), and the control endpoint as a second listener in the same
loop. Log lines are passed through a filter that replaces every current stub and real value,
and the proxy credential, before they are written.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import uvloop
from mitmproxy import ctx, options

from sidecar.addon import VaultAddon, proxy_authorization
from sidecar.control import ControlServer, Vault
from sidecar.master import VaultMaster
from sidecar.resolver import CachedResolver

log = logging.getLogger("lap.sidecar")

_STUB_TEXT = re.compile(r"lap_stub_[A-Za-z0-9_]*")


class _Redact(logging.Filter):
    """Replaces stubs, the current policy's real values and ``hidden`` (the proxy secret and
    its base64 form) in every formatted log line."""

    def __init__(self, vault: Vault, hidden: tuple[str, ...]) -> None:
        super().__init__()
        self.vault = vault
        self.hidden = hidden

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        policy = self.vault.policy
        if policy is not None and policy.value_re is not None:
            raw = message.encode("utf-8", "surrogateescape")
            if policy.has_value(raw):
                message = policy.value_re.sub(b"[value]", raw).decode("utf-8", "replace")
        for text in self.hidden:
            message = message.replace(text, "[proxyauth]")
        record.msg = _STUB_TEXT.sub("[stub]", message)
        record.args = None
        record.exc_info = None
        record.exc_text = None
        return True


def _read_proxyauth(path: str | None) -> bytes | None:
    """The proxy-auth secret of ``--proxyauth-file`` (surrounding whitespace stripped)."""
    if path is None:
        return None
    secret = Path(path).read_bytes().strip()
    if not secret:
        raise SystemExit("--proxyauth-file is empty")
    return secret


def _hidden_forms(secret: bytes) -> tuple[str, ...]:
    """The texts a log line must not show: the secret and its base64 in the header value."""
    encoded = proxy_authorization(secret).split(b" ", 1)[1]
    return (encoded.decode("ascii"), secret.decode("utf-8", "surrogateescape"))


def _listen_mode(spec: str) -> str:
    host, _, port = spec.removeprefix("tcp:").rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit("--proxy must be HOST:PORT or tcp:HOST:PORT")
    return f"regular@{host}:{port}"


def _confdir(state_dir: Path) -> Path:
    """A private directory holding ``state_dir/ca.pem`` as mitmproxy's ``mitmproxy-ca.pem``."""
    confdir = Path(tempfile.mkdtemp(prefix="lap-sidecar-"))
    target = confdir / "mitmproxy-ca.pem"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write((state_dir / "ca.pem").read_bytes())
    return confdir


class _Ready:
    """Writes the proxy's bound address to ``--ready-file`` once mitmproxy listens."""

    def __init__(self, path: str | None) -> None:
        self.path = path

    def running(self) -> None:
        if self.path is None:
            return
        server = ctx.master.addons.get("proxyserver")
        host, port = server.listen_addrs()[0][:2]
        tmp = f"{self.path}.tmp"
        Path(tmp).write_text(f"{host}:{port}\n")
        os.replace(tmp, self.path)


async def run(args: argparse.Namespace) -> None:
    state_dir = Path(args.state_dir)
    vault = Vault((state_dir / "key.txt").read_bytes().strip(), sandbox_id=args.sandbox_id)
    proxyauth = _read_proxyauth(args.proxyauth_file)
    hidden = () if proxyauth is None else _hidden_forms(proxyauth)
    redact = _Redact(vault, hidden)
    for handler in logging.getLogger().handlers:
        handler.addFilter(redact)
    confdir = _confdir(state_dir)
    try:
        opts = options.Options(
            mode=[_listen_mode(args.proxy)],
            confdir=str(confdir),
            upstream_cert=False,
            http3=False,
            rawtcp=False,
        )
        if args.upstream_ca:
            opts.update(ssl_verify_upstream_trusted_ca=args.upstream_ca)
        master = VaultMaster(opts)
        addon = VaultAddon(vault, resolver=CachedResolver(), proxyauth=proxyauth)
        master.addons.add(addon, _Ready(args.ready_file))
        control = await ControlServer(vault).start(args.control)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, master.shutdown)
        async with control:
            await master.run()
    finally:
        shutil.rmtree(confdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sidecar", description=__doc__.splitlines()[0])
    parser.add_argument("--proxy", required=True, help="HOST:PORT or tcp:HOST:PORT")
    parser.add_argument("--control", required=True, help="unix:PATH or tcp:HOST:PORT")
    parser.add_argument("--state-dir", required=True, help="holds key.txt and ca.pem")
    parser.add_argument("--upstream-ca", help="a PEM bundle trusted for upstreams too")
    parser.add_argument("--ready-file", help="written with HOST:PORT once listening")
    parser.add_argument("--sandbox-id", help="refuse bundles for any other sandbox")
    parser.add_argument(
        "--proxyauth-file", help="holds the secret clients must send as Basic lap:SECRET"
    )
    parser.add_argument("--verbose", action="store_true", help="log every decision")
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    logging.getLogger("lap").setLevel(logging.INFO if args.verbose else logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt):
        # uvloop: the same asyncio API with a faster event loop; mitmproxy's per-request
        # CPU is mostly loop and stream work (docs/performance.md).
        uvloop.run(run(args))


if __name__ == "__main__":
    main()
