"""Vault sidecar overhead: direct TLS vs via the sidecar (1 and 20 secrets) vs plain mitmdump.

Added latency on a keep-alive connection (p50/p99) and on a new TLS connection per request
(p50), requests/s through the proxy from ``CLIENTS`` concurrent keep-alive clients, proxy CPU
per keep-alive request and per new connection (utime+stime from /proc/<pid>/stat), and the
first request to a host the proxy has not seen yet. Upstream: a local aiohttp TLS echo
server. The baseline of each sidecar row is plain ``mitmdump`` with a one-line header addon,
measured in the same run.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench.processes import cpu_seconds
from bench.report import Row, percentile, print_rows, scaled
from tests.vault.sidecar_support import Pki, Sidecar, Upstream, make_stub, make_value

KEEPALIVE = scaled(400, 50)
NEW_CONN = scaled(60, 10)
CLIENTS = 8
PER_CLIENT = scaled(100, 10)
ADDON = "def request(flow):\n    flow.request.headers['authorization'] = 'Bearer real-token'\n"


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def _measure(url: str, verify: ssl.SSLContext, proxy: str | None, pid: int | None, stub: str):
    headers = {"Authorization": f"Bearer {stub}"}
    proxy_pids = [pid] if pid else []  # direct requests: no proxy, no CPU to count
    with httpx.Client(verify=verify, proxy=proxy) as client:
        first = _timed(lambda: client.get(url, headers=headers).raise_for_status())
        for _ in range(20):
            client.get(url, headers=headers)
        cpu0 = cpu_seconds(proxy_pids)
        keep = [_timed(lambda: client.get(url, headers=headers)) for _ in range(KEEPALIVE)]
        cpu = (cpu_seconds(proxy_pids) - cpu0) / KEEPALIVE * 1000
    fresh = []
    cpu0 = cpu_seconds(proxy_pids)
    for _ in range(NEW_CONN):
        with httpx.Client(verify=verify, proxy=proxy) as client:
            fresh.append(_timed(lambda c=client: c.get(url, headers=headers)))
    cpu_new = (cpu_seconds(proxy_pids) - cpu0) / NEW_CONN * 1000
    return {
        "p50": percentile(keep, 0.5),
        "p99": percentile(keep, 0.99),
        "new": percentile(fresh, 0.5),
        "cpu": cpu,
        "cpu_new": cpu_new,
        "first": first,
        "rps": _requests_per_second(url, verify, proxy, headers),
    }


def _requests_per_second(url: str, verify: ssl.SSLContext, proxy: str | None, headers) -> float:
    """``CLIENTS`` threads, each with its own keep-alive connection, ``PER_CLIENT`` requests."""

    def client_run() -> None:
        with httpx.Client(verify=verify, proxy=proxy) as client:
            client.get(url, headers=headers).raise_for_status()
            for _ in range(PER_CLIENT):
                client.get(url, headers=headers)

    threads = [threading.Thread(target=client_run) for _ in range(CLIENTS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return CLIENTS * PER_CLIENT / (time.perf_counter() - started)


def _start_mitmdump(workdir: Path, pki: Pki, upstream_ca: Path) -> tuple[subprocess.Popen, int]:
    confdir = workdir / "mitm"
    confdir.mkdir()
    (confdir / "mitmproxy-ca.pem").write_bytes(pki.ca_pem())
    addon = workdir / "addon.py"
    addon.write_text(ADDON)
    mitmdump = Path(sys.executable).with_name("mitmdump")
    process = subprocess.Popen(
        [
            str(mitmdump),
            "-q",
            "--listen-host",
            "127.0.0.1",
            "--listen-port",
            "0",
            "--set",
            f"confdir={confdir}",
            "--set",
            f"ssl_verify_upstream_trusted_ca={upstream_ca}",
            "-s",
            str(addon),
            "--set",
            "upstream_cert=false",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if f"pid={process.pid}," in line:
                return process, int(line.split()[3].rsplit(":", 1)[1])
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("mitmdump did not start")


def _bundle(count: int, version: int) -> dict:
    secrets = [
        {
            "name": f"S{i}",
            "stub": make_stub(f"S{i}"),
            "value": make_value(f"S{i}"),
            "allowed_hosts": ["localhost", "127.0.0.1"],
        }
        for i in range(count)
    ]
    return {
        "sandbox_id": "bench",
        "version": version,
        "secrets": secrets,
        "egress": {"allow_out": ["localhost", "127.0.0.1"], "deny_out": []},
    }


def measure() -> list[Row]:
    pki = Pki()
    upstream = Upstream(pki.upstream).start()
    workdir = Path(tempfile.mkdtemp(prefix="lap-bench-sidecar-"))
    sidecar = Sidecar(workdir, pki, workdir / "sidecar.log").start()
    mitm, mitm_port = _start_mitmdump(workdir, pki, sidecar.upstream_ca)
    url = f"{upstream.url}/x"
    try:
        root = ssl.create_default_context(cafile=str(sidecar.root_pem))
        direct_ctx = ssl.create_default_context(cafile=str(sidecar.upstream_ca))
        assert sidecar.process is not None
        via = {}
        for version, count in enumerate((1, 20), start=1):
            bundle = _bundle(count, version)
            assert sidecar.push(bundle).status_code == 204
            stub = bundle["secrets"][0]["stub"]
            via[count] = _measure(url, root, sidecar.proxy_url, sidecar.process.pid, stub)
        direct = _measure(url, direct_ctx, None, None, stub)
        new_host = f"https://127.0.0.1:{upstream.port}/x"
        with httpx.Client(verify=root, proxy=sidecar.proxy_url) as client:
            via[20]["first"] = _timed(lambda: client.get(new_host, headers={"A": stub}))
        dump = _measure(url, root, f"http://127.0.0.1:{mitm_port}", mitm.pid, stub)
    finally:
        mitm.terminate()
        mitm.wait(10)
        sidecar.stop()
        upstream.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    def added(measured: dict, key: str) -> float:
        return measured[key] - direct[key]

    rows = [
        Row("vault: direct TLS, keep-alive p50 (no proxy)", direct["p50"], "ms"),
        Row("vault: direct TLS, new connection p50 (no proxy)", direct["new"], "ms"),
        Row("vault: direct TLS requests/s (no proxy)", direct["rps"], "req/s"),
    ]
    mitmdump = "mitmdump"
    for count in (1, 20):
        ours, name = via[count], f"vault ({count} secret{'s' if count > 1 else ''})"
        rows += [
            Row(
                f"{name}: added keep-alive p50",
                added(ours, "p50"),
                "ms",
                added(dump, "p50"),
                mitmdump,
                "≤ 0.8 ms",
            ),
            Row(
                f"{name}: added keep-alive p99",
                added(ours, "p99"),
                "ms",
                added(dump, "p99"),
                mitmdump,
            ),
            Row(
                f"{name}: added new TLS connection p50",
                added(ours, "new"),
                "ms",
                added(dump, "new"),
                mitmdump,
                "≤ 2.8 ms",
            ),
            Row(
                f"{name}: requests/s ({CLIENTS} clients)",
                ours["rps"],
                "req/s",
                dump["rps"],
                mitmdump,
            ),
            Row(
                f"{name}: proxy CPU per request",
                ours["cpu"],
                "ms",
                dump["cpu"],
                mitmdump,
                "≤ 0.4 ms",
            ),
            Row(
                f"{name}: proxy CPU per new TLS connection",
                ours["cpu_new"],
                "ms",
                dump["cpu_new"],
                mitmdump,
            ),
        ]
    rows.append(
        Row(
            "vault (20 secrets): first request to a new host",
            via[20]["first"],
            "ms",
            dump["first"],
            mitmdump,
            "≤ 25 ms",
        )
    )
    return rows


def main() -> None:
    print_rows(
        f"vault_sidecar: {KEEPALIVE} keep-alive / {NEW_CONN} new-connection requests,"
        f" {CLIENTS}x{PER_CLIENT} for requests/s",
        measure(),
    )


if __name__ == "__main__":
    main()
