"""Vault sidecar overhead: direct vs via the sidecar (20 secrets) vs plain mitmdump.

Prints added latency on a keep-alive connection (p50/p99), on a new TLS connection per request
(p50), proxy CPU per keep-alive request (utime+stime from /proc/<pid>/stat), and the first
request to a host the proxy has not seen yet. Upstream: a local aiohttp TLS echo server.
"""

from __future__ import annotations

import os
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.vault.sidecar_support import Pki, Sidecar, Upstream, make_stub, make_value

KEEPALIVE = 400
NEW_CONN = 60
TARGETS = {"keep-alive p50": 0.8, "new TLS p50": 2.8, "CPU/request": 0.4, "first new host": 25.0}
ADDON = "def request(flow):\n    flow.request.headers['authorization'] = 'Bearer real-token'\n"


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def _measure(url: str, verify: ssl.SSLContext, proxy: str | None, pid: int | None, stub: str):
    headers = {"Authorization": f"Bearer {stub}"}
    with httpx.Client(verify=verify, proxy=proxy) as client:
        first = _timed(lambda: client.get(url, headers=headers).raise_for_status())
        for _ in range(20):
            client.get(url, headers=headers)
        cpu0 = _cpu_seconds(pid) if pid else 0.0
        keep = [_timed(lambda: client.get(url, headers=headers)) for _ in range(KEEPALIVE)]
        cpu = (_cpu_seconds(pid) - cpu0) / KEEPALIVE * 1000 if pid else 0.0
    fresh = []
    for _ in range(NEW_CONN):
        with httpx.Client(verify=verify, proxy=proxy) as client:
            fresh.append(_timed(lambda c=client: c.get(url, headers=headers)))
    keep.sort()
    return {
        "p50": statistics.median(keep),
        "p99": keep[int(len(keep) * 0.99) - 1],
        "new": statistics.median(fresh),
        "cpu": cpu,
        "first": first,
    }


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


def main() -> None:
    pki = Pki()
    upstream = Upstream(pki.upstream).start()
    workdir = Path(tempfile.mkdtemp(prefix="lap-bench-sidecar-"))
    sidecar = Sidecar(workdir, pki, workdir / "sidecar.log").start()
    mitm, mitm_port = _start_mitmdump(workdir, pki, sidecar.upstream_ca)
    try:
        secrets = [
            {
                "name": f"S{i}",
                "stub": make_stub(f"S{i}"),
                "value": make_value(f"S{i}"),
                "allowed_hosts": ["localhost", "127.0.0.1"],
            }
            for i in range(20)
        ]
        bundle = {
            "sandbox_id": "bench",
            "version": 1,
            "secrets": secrets,
            "egress": {"allow_out": ["localhost", "127.0.0.1"], "deny_out": []},
        }
        assert sidecar.push(bundle).status_code == 204
        stub = secrets[0]["stub"]
        root = ssl.create_default_context(cafile=str(sidecar.root_pem))
        direct_ctx = ssl.create_default_context(cafile=str(sidecar.upstream_ca))
        assert sidecar.process is not None
        direct = _measure(f"{upstream.url}/x", direct_ctx, None, None, stub)
        via = _measure(f"{upstream.url}/x", root, sidecar.proxy_url, sidecar.process.pid, stub)
        new_host = f"https://127.0.0.1:{upstream.port}/x"
        with httpx.Client(verify=root, proxy=sidecar.proxy_url) as client:
            via["first"] = _timed(lambda: client.get(new_host, headers={"A": stub}))
        dump = _measure(f"{upstream.url}/x", root, f"http://127.0.0.1:{mitm_port}", mitm.pid, stub)
        rows = [
            ("keep-alive p50", via["p50"] - direct["p50"], dump["p50"] - direct["p50"]),
            ("keep-alive p99", via["p99"] - direct["p99"], dump["p99"] - direct["p99"]),
            ("new TLS p50", via["new"] - direct["new"], dump["new"] - direct["new"]),
            ("CPU/request", via["cpu"], dump["cpu"]),
            ("first new host", via["first"], dump["first"]),
        ]
        print(
            f"vault sidecar (20 secrets), {KEEPALIVE} keep-alive / {NEW_CONN} new-connection "
            "requests; added ms vs direct"
        )
        print(
            f"direct: keep-alive p50 {direct['p50']:.2f} ms, p99 {direct['p99']:.2f} ms, "
            f"new TLS p50 {direct['new']:.2f} ms"
        )
        print(f"{'metric (ms)':<18}{'sidecar':>10}{'mitmdump':>10}{'target':>10}")
        for name, ours, theirs in rows:
            target = TARGETS.get(name)
            shown = f"{target:.1f}" if target is not None else "-"
            print(f"{name:<18}{ours:>10.2f}{theirs:>10.2f}{shown:>10}")
    finally:
        mitm.terminate()
        mitm.wait(10)
        sidecar.stop()
        upstream.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
