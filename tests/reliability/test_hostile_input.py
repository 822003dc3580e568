"""Hostile input against the real platform: each gets a clear 4xx (in the API's error shape) or
a named WebSocket close code, and nothing else is affected — a terminal attached throughout
keeps working and the platform stays healthy.

Other sessions' tokens, tampered tokens and foreign Origins are covered in
``tests/e2e/test_terminal.py``; schema-shaped garbage in every field by ``test_api_fuzz.py``.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid

import pytest
from django.core import signing
from websockets.exceptions import ConnectionClosed

from sandboxes.runner.protocol import MAX_SIZE
from tests.e2e.terminal import attach, read_until, resize

TEN_MB = 10 * 1024 * 1024
API_PREFIX = "/api/v1/managed_agents"


@pytest.fixture(scope="module")
def platform(start_platform):
    return start_platform()


@pytest.fixture(scope="module")
def agent(platform) -> str:
    return platform.create_agent("hostile-shell")["name"]


@pytest.fixture(scope="module")
def bystander(platform, agent):
    """A session whose terminal must be unaffected by everything in this module."""
    return platform.ready_session(agent)


async def assert_unaffected(platform, session) -> None:
    ws = await attach(platform.tty_url(session), session["tty_token"])
    try:
        await ws.send(b"echo still-$((40+2))\n")
        await read_until(ws, b"still-42")
    finally:
        await ws.close()
    assert platform.client.get("/healthz").json()["ok"] is True


def assert_error(reply, status: int, code: str | None = None) -> dict:
    assert reply.status_code == status, (reply.status_code, reply.text[:300])
    assert reply.headers["content-type"].startswith("application/json"), reply.headers
    body = reply.json()
    assert isinstance(body["error"], str) and body["error"], body
    if code is not None:
        assert body["code"] == code, body
    return body


def test_oversized_bodies_get_413(platform, agent, bystander):
    filler = "a" * (5 * 1024 * 1024)
    for method, path, body in (
        ("POST", "/agents", {"name": "big", "harness_id": "shell", "prompt": filler}),
        ("PATCH", f"/agents/{agent}", {"prompt": filler}),
        ("POST", f"/agents/{agent}/session", {"initial_prompt": filler}),
        ("POST", f"/sessions/{bystander['id']}/exec", {"argv": ["echo", filler]}),
    ):
        assert_error(platform.api(method, path, json=body), 413, "too_large")
    assert platform.api("GET", "/agents/big").status_code == 404
    assert platform.api("GET", f"/agents/{agent}").json()["prompt"] == ""


def test_bodies_that_are_not_json_get_400_or_415(platform):
    before = platform.api("GET", "/agents").json()["total"]
    assert_error(platform.api("POST", "/agents", data={"name": "form"}), 415)
    nested = b"[" * 5000 + b"]" * 5000  # deeper than the interpreter's recursion limit
    for raw in (
        b'{"name": "\xff\xfe", "harness_id": "shell"}',
        b"{not json",
        b"\x00" * 64,
        nested,
    ):
        reply = platform.api(
            "POST", "/agents", content=raw, headers={"Content-Type": "application/json"}
        )
        assert_error(reply, 400, "parse_error")
    assert platform.api("GET", "/agents").json()["total"] == before


NAMES = {
    "nul": "nul\x00",
    "escape": "esc\x1b[31mred",
    "newline": "new\nline",
    "bidi": "bidi\u202eevil",
    "zero-width": "zero\u200bwidth",
    "slash": "a/b",
    "lone-surrogate": "\ud800",
}


@pytest.mark.parametrize("name", NAMES.values(), ids=NAMES.keys())
def test_control_characters_in_names_and_titles_are_refused(platform, agent, name):
    body = json.dumps({"name": name, "harness_id": "shell"})  # \ud800 survives as an escape
    reply = platform.api(
        "POST", "/agents", content=body, headers={"Content-Type": "application/json"}
    )
    assert "name" in assert_error(reply, 400, "invalid")["fields"]
    reply = platform.api("PATCH", f"/agents/{agent}", json={"name": name[:-1] + "\x07"})
    assert_error(reply, 400, "invalid")
    if "/" not in name:  # a title may contain a slash
        title = json.dumps({"title": name})
        reply = platform.api(
            "POST",
            f"/agents/{agent}/session",
            content=title,
            headers={"Content-Type": "application/json"},
        )
        assert_error(reply, 400, "invalid")


def test_paging_numbers_out_of_range_are_400(platform, bystander):
    for path, params in (
        ("/agents", {"offset": 10**25}),
        ("/agents", {"offset": -1}),
        ("/agents", {"limit": 10**6}),
        ("/sessions", {"limit": 0}),
        (f"/sessions/{bystander['id']}/interceptions", {"offset": 2**63}),
        (f"/sessions/{bystander['id']}/interceptions", {"limit": "many"}),
    ):
        assert_error(platform.api("GET", path, params=params), 400, "invalid")


@pytest.mark.parametrize(
    "path",
    [
        "/sessions/..%2Fagents",
        "/sessions/%2e%2e",
        "/sessions/%2e%2e%2f%2e%2e%2fadmin",
        "/agents/..%2F..%2Fadmin%2F",
        "/sessions/{id}%00",
        "/sessions/{id}%0a",
        "/sessions/" + "a" * 5000,
        "/agents/%ff%fe",
        "/agents/%00",
        "/sessions/{id}%2F..%2F..%2Fagents",
    ],
)
def test_path_tricks_in_ids_are_404(platform, bystander, path):
    reply = platform.api("GET", path.replace("{id}", bystander["id"]))
    assert_error(reply, 404, "not_found")


def operations(platform) -> list[tuple[str, str, dict]]:
    """(method, path template, operation) of every API operation in the live schema: what
    the platform serves, so endpoints added later are attacked too."""
    schema = platform.client.get(
        "/api/schema/", headers={"Accept": "application/vnd.oai.openapi+json"}
    ).json()
    return [
        (method.upper(), path, operation)
        for path, item in schema["paths"].items()
        if path.startswith(API_PREFIX)
        for method, operation in item.items()
        if method in ("get", "post", "put", "patch", "delete")
    ]


TRICKY_IDS = ["..%2F..%2Fagents", "%00", "%2e%2e", "x" * 3000, "%ff%fe", "%0d%0aX-Injected:%201"]


def test_every_endpoint_refuses_tricky_ids_with_a_4xx(platform):
    for method, path, _ in operations(platform):
        if "{" not in path:
            continue
        for trick in TRICKY_IDS:
            url = re.sub(r"\{[^}]+\}", trick, path).removeprefix(API_PREFIX)
            reply = platform.api(method, url, json={})
            assert reply.status_code in (400, 404, 405), (method, url, reply.status_code)
            assert_error(reply, reply.status_code)
            assert "X-Injected" not in reply.headers


def test_every_endpoint_with_a_body_refuses_huge_and_broken_ones(platform, agent, bystander):
    ids = {"agent_id": agent, "session_id": bystander["id"]}
    for method, path, operation in operations(platform):
        if "requestBody" not in operation or method == "DELETE":
            continue
        url = re.sub(r"\{([^}]+)\}", lambda m: ids[m.group(1)], path).removeprefix(API_PREFIX)
        json_body = {"Content-Type": "application/json"}
        huge = platform.api(
            method, url, content=b'{"x": "' + b"a" * (5 << 20) + b'"}', headers=json_body
        )
        assert_error(huge, 413, "too_large")
        broken = platform.api(method, url, content=b'{"x": "\xff"}', headers=json_body)
        assert_error(broken, 400, "parse_error")
        form = platform.api(method, url, content=b"x=1", headers={"Content-Type": "text/plain"})
        assert_error(form, 415)
    assert platform.api("GET", f"/sessions/{bystander['id']}").json()["status"] == "ready"


async def close_of(url: str, token: str | None, send=None) -> tuple[int | None, str, list]:
    """Attach, optionally send one frame, then collect frames until the server closes."""
    ws = await attach(url, token)
    frames = []
    with pytest.raises(ConnectionClosed):
        if send is not None:
            await ws.recv()  # the attach snapshot
            await ws.send(send)
        while True:
            frames.append(await asyncio.wait_for(ws.recv(), 15))
    return ws.close_code, ws.close_reason, frames


async def test_websocket_path_tricks_close_4404(platform, bystander):
    base = f"ws://127.0.0.1:{platform.port}/api/v1/managed_agents/sessions"
    for path in (
        "not-a-uuid/tty",
        "..%2F/tty",
        f"{bystander['id']}/tty/../tty",
        f"{bystander['id']}%00/tty",
        f"{bystander['id']}/tty/extra",
    ):
        code, _, frames = await close_of(f"{base}/{path}", bystander["tty_token"])
        assert (code, frames) == (4404, []), path
    code, _, frames = await close_of(f"{base}/{uuid.uuid4()}/tty", bystander["tty_token"])
    assert (code, frames) == (4401, [])  # a token opens only its own session


async def test_ten_megabyte_frames_close_4413_and_other_clients_carry_on(platform, bystander):
    url, token = platform.tty_url(bystander), bystander["tty_token"]
    watcher = await attach(url, token)
    try:
        await watcher.recv()
        for frame in (b"x" * TEN_MB, "x" * TEN_MB, "é" * (TEN_MB // 2)):
            code, reason, _ = await close_of(url, token, send=frame)
            assert code == 4413, (code, reason)  # daphne sends no reason text
        await watcher.send(b"echo watcher-$((2+3))\n")
        await read_until(watcher, b"watcher-5")
    finally:
        await watcher.close()
    await assert_unaffected(platform, bystander)


async def test_absurd_resizes_get_an_error_frame_and_change_nothing(platform, bystander):
    ws = await attach(platform.tty_url(bystander), bystander["tty_token"])
    try:
        await ws.recv()
        await resize(ws, 90, 20)
        await ws.send(b"stty size\n")
        await read_until(ws, b"20 90")
        for cols, rows in ((10**9, 10**9), (-1, 0), (MAX_SIZE + 1, 24), ("80", 24), (True, 24)):
            await ws.send(json.dumps({"type": "resize", "cols": cols, "rows": rows}))
            async with asyncio.timeout(10):
                while not isinstance(frame := await ws.recv(), str):
                    pass
            error = json.loads(frame)
            assert (error["type"], error["code"]) == ("error", "invalid_resize"), error
        await ws.send(b"stty size\n")
        output = await read_until(ws, b"20 90")
        assert b"20 90" in output
    finally:
        await ws.close()


async def test_expired_tokens_close_4401(platform, agent):
    session = platform.ready_session(agent)
    secret = json.loads((platform.home / "keys.json").read_text())["DJANGO_SECRET_KEY"]

    class Yesterday(signing.TimestampSigner):
        def timestamp(self) -> str:
            return signing.b62_encode(int(time.time()) - 2 * 86400)

    expired = Yesterday(key=secret, salt="lap.tty").sign(session["id"])
    fresh = signing.TimestampSigner(key=secret, salt="lap.tty").sign(session["id"])
    code, _, frames = await close_of(platform.tty_url(session), expired)
    assert (code, frames) == (4401, [])
    # The same signature made now opens it: expiry, not a bad key, refused the first.
    ws = await attach(platform.tty_url(session), fresh)
    try:
        await ws.send(b"echo fresh-$((1+1))\n")
        await read_until(ws, b"fresh-2")
    finally:
        await ws.close()
    # A terminal token is no API credential.
    reply = platform.client.get(
        f"/api/v1/managed_agents/sessions/{session['id']}",
        headers={"Authorization": f"Bearer {session['tty_token']}"},
    )
    assert_error(reply, 401)


async def test_the_bystander_survived_everything(platform, bystander):
    await assert_unaffected(platform, bystander)
