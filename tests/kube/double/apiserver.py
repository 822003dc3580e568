"""A test double of the Kubernetes API server: plain HTTP on 127.0.0.1 for the real client.

Serves, in any namespace: pods, secrets, configmaps and events (``/api/v1``) and
networkpolicies (``/apis/networking.k8s.io/v1``): create, get, list (label and field
selectors), delete (one, or a collection), watch (``?watch=true`` from a resourceVersion,
streamed as chunked JSON lines; 410 Gone past the kept history), replace and merge patch; plus
namespaces and ``/version``.
Failures are real ``Status`` objects: 404 NotFound, 409 AlreadyExists/Conflict, 422 Invalid,
403 Forbidden (admission: unknown PriorityClass or RuntimeClass), 400 BadRequest.

Bodies are validated by deserialising them with the client's own models, then checked like
the real server checks them (``validation``). Deleting a pod is graceful when a kubelet
double runs it (``deletionTimestamp`` first, removal once its containers stopped); owned
objects (ownerReferences) are garbage-collected when their owner goes.
"""

from __future__ import annotations

import json
import re
import select
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from . import validation
from .store import ApiError, Obj, Store, now, parse_selector
from .validation import KINDS

ROUTE = re.compile(
    r"^/(?:api/v1|apis/networking\.k8s\.io/v1)/namespaces/(?P<namespace>[^/]+)/"
    r"(?P<resource>pods|secrets|configmaps|events|networkpolicies)(?:/(?P<name>[^/]+))?$"
)
NAMESPACES = re.compile(r"^/api/v1/namespaces(?:/(?P<name>[^/]+))?$")
GROUPS = {"networkpolicies": "/apis/networking.k8s.io/v1"}
MERGE_TYPES = ("application/merge-patch+json", "application/strategic-merge-patch+json")
PodDeleter = Callable[[str, str, int | None], bool]  # (namespace, name, grace) -> handled?
MAX_WATCH = 1800.0


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (strategic merge patches are treated the same here)."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def status_body(error: ApiError) -> Obj:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": error.message,
        "reason": error.reason,
        "details": error.details,
        "code": error.code,
    }


class ApiServer:
    """The HTTP side; ``pod_deleter`` (the kubelet double) handles graceful pod deletion."""

    def __init__(
        self,
        store: Store,
        *,
        priority_classes: frozenset[str] = frozenset(),
        runtime_classes: frozenset[str] = frozenset(),
    ) -> None:
        self.store = store
        self.priority_classes = priority_classes
        self.runtime_classes = runtime_classes
        self.pod_deleter: PodDeleter | None = None
        self.requests: list[tuple[str, str]] = []  # (method, path): what clients asked
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._http.daemon_threads = True
        self._http.api = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._http.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> ApiServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.store.close()
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(10)

    # --- operations (each raises ApiError) ---------------------------------------------

    def create(self, resource: str, namespace: str, body: Obj) -> Obj:
        body.pop("status", None)
        validation.check(resource, body, namespace)
        if resource == "pods":
            self._admit(body)
            body["status"] = {"phase": "Pending", "qosClass": _qos(body)}
        for key in ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp"):
            body["metadata"].pop(key, None)
        return self.store.create(resource, namespace, body)

    def replace(self, resource: str, namespace: str, name: str, body: Obj) -> Obj:
        validation.check(resource, body, namespace)
        if body["metadata"]["name"] != name:
            raise ApiError(400, "BadRequest", "the name of the object does not match the URL")

        def change(current: Obj) -> None:
            offered = body["metadata"].get("resourceVersion")
            if offered and offered != current["metadata"]["resourceVersion"]:
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {resource} "{name}": the object has been '
                    "modified; please apply your changes to the latest version and try again",
                )
            self._check_update(resource, current, body)
            keep = {k: current["metadata"][k] for k in ("uid", "creationTimestamp", "namespace")}
            current.clear()
            current.update(body)
            current["metadata"].update(keep)

        return self.store.update(resource, namespace, name, change)

    def patch(self, resource: str, namespace: str, name: str, patch: Obj) -> Obj:
        def change(current: Obj) -> None:
            patched = merge_patch(current, patch)
            validation.check(resource, patched, namespace)
            if patched["metadata"]["name"] != name:
                raise ApiError(422, "Invalid", "metadata.name: field is immutable")
            self._check_update(resource, current, patched)
            current.clear()
            current.update(patched)

        return self.store.update(resource, namespace, name, change)

    def delete(self, resource: str, namespace: str, name: str, grace: int | None) -> Obj:
        obj = self.store.get(resource, namespace, name)
        if resource == "pods":
            if self.pod_deleter is not None and self.pod_deleter(namespace, name, grace):
                return self.store.get(resource, namespace, name)
            return self.store.remove(resource, namespace, name)
        self.store.remove(resource, namespace, name)
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {"name": name, "kind": resource, "uid": obj["metadata"]["uid"]},
        }

    def _admit(self, pod: Obj) -> None:
        spec = pod.get("spec") or {}
        priority = spec.get("priorityClassName")
        if priority and priority not in self.priority_classes:
            raise ApiError(
                403,
                "Forbidden",
                f'pods "{pod["metadata"]["name"]}" is forbidden: '
                f"no PriorityClass with name {priority} was found",
            )
        runtime = spec.get("runtimeClassName")
        if runtime and runtime not in self.runtime_classes:
            raise ApiError(403, "Forbidden", f'pod rejected: RuntimeClass "{runtime}" not found')

    @staticmethod
    def _check_update(resource: str, current: Obj, new: Obj) -> None:
        if resource == "pods" and new.get("spec") != current.get("spec"):
            raise ApiError(
                422,
                "Invalid",
                "spec: Forbidden: pod updates may not change fields other than "
                "metadata in this double",
            )
        if resource in ("secrets", "configmaps") and current.get("immutable"):
            for key in ("data", "binaryData", "immutable"):
                if new.get(key) != current.get(key):
                    raise ApiError(
                        422,
                        "Invalid",
                        f"{key}: Forbidden: field is immutable when `immutable` is set",
                    )
        if resource == "pods":
            new["status"] = current.get("status")


def _qos(pod: Obj) -> str:
    containers = (pod["spec"].get("containers") or []) + (pod["spec"].get("initContainers") or [])
    resources = [c.get("resources") or {} for c in containers]
    if all(r.get("limits") and r.get("requests") == r.get("limits") for r in resources):
        return "Guaranteed"
    return "Burstable" if any(r for r in resources) else "BestEffort"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Any

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    @property
    def api(self) -> ApiServer:
        return self.server.api

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        self.api.requests.append((method, url.path))
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            if url.path == "/version" and method == "GET":
                self._send(200, _VERSION)
                return
            namespaces = NAMESPACES.match(url.path)
            if namespaces is not None:
                self._namespaces(method, namespaces["name"], raw)
                return
            route = ROUTE.match(url.path)
            expected = GROUPS.get(route["resource"], "/api/v1") if route else ""
            if route is None or not url.path.startswith(expected + "/"):
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            namespace, resource, name = route["namespace"], route["resource"], route["name"]
            if name is None:
                self._collection(method, namespace, resource, query, raw)
            else:
                self._item(method, namespace, resource, name, query, raw)
        except ApiError as error:
            self._send(error.code, status_body(error))

    def _namespaces(self, method: str, name: str | None, raw: bytes) -> None:
        """Namespaces are cluster-scoped (stored under the namespace ``""``); deleting one
        deletes everything in it."""
        api = self.api
        if name is None and method == "POST":
            self._send(201, api.create("namespaces", "", validation.parse_body(raw)))
        elif name is None and method == "GET":
            items, version = api.store.list("namespaces", "", [], [])
            self._send(
                200,
                {
                    "kind": "NamespaceList",
                    "apiVersion": "v1",
                    "metadata": {"resourceVersion": version},
                    "items": items,
                },
            )
        elif name is not None and method == "GET":
            self._send(200, api.store.get("namespaces", "", name))
        elif name is not None and method == "DELETE":
            for resource in KINDS:
                if resource != "namespaces":
                    for obj in api.store.list(resource, name, [], [])[0]:
                        api.delete(resource, name, obj["metadata"]["name"], 0)
            self._send(200, api.store.remove("namespaces", "", name))
        else:
            raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on namespaces")

    def _collection(
        self, method: str, namespace: str, resource: str, query: dict[str, str], raw: bytes
    ) -> None:
        if method == "POST":
            self._send(201, self.api.create(resource, namespace, validation.parse_body(raw)))
            return
        labels = parse_selector(query.get("labelSelector"))
        fields = parse_selector(query.get("fieldSelector"))
        if method == "DELETE":  # deletecollection
            items, version = self.api.store.list(resource, namespace, labels, fields)
            for obj in items:
                self.api.delete(resource, namespace, obj["metadata"]["name"], None)
            kind = KINDS[resource]
            self._send(
                200,
                {
                    "kind": kind.list_kind,
                    "apiVersion": kind.api_version,
                    "metadata": {"resourceVersion": version},
                    "items": items,
                },
            )
            return
        if method != "GET":
            raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on {resource}")
        if query.get("watch") in ("true", "1"):
            self._watch(namespace, resource, query, labels, fields)
            return
        items, version = self.api.store.list(resource, namespace, labels, fields)
        kind = KINDS[resource]
        self._send(
            200,
            {
                "kind": kind.list_kind,
                "apiVersion": kind.api_version,
                "metadata": {"resourceVersion": version},
                "items": items,
            },
        )

    def _item(
        self,
        method: str,
        namespace: str,
        resource: str,
        name: str,
        query: dict[str, str],
        raw: bytes,
    ) -> None:
        api = self.api
        if method == "GET":
            self._send(200, api.store.get(resource, namespace, name))
        elif method == "PUT":
            self._send(200, api.replace(resource, namespace, name, validation.parse_body(raw)))
        elif method == "PATCH":
            content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            if content_type not in MERGE_TYPES:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    f"the double does not take {content_type!r} patches",
                )
            self._send(200, api.patch(resource, namespace, name, validation.parse_body(raw)))
        elif method == "DELETE":
            options = json.loads(raw) if raw.strip() else {}
            validation.check_model_named("V1DeleteOptions", options)
            grace = options.get("gracePeriodSeconds", query.get("gracePeriodSeconds"))
            self._send(
                200, api.delete(resource, namespace, name, None if grace is None else int(grace))
            )
        else:
            raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on {resource}/NAME")

    def _watch(
        self, namespace: str, resource: str, query: dict[str, str], labels: list, fields: list
    ) -> None:
        timeout = min(float(query.get("timeoutSeconds") or MAX_WATCH), MAX_WATCH)
        events = self.api.store.watch(
            resource,
            namespace,
            query.get("resourceVersion"),
            labels,
            fields,
            time.monotonic() + timeout,
            self._client_gone,
        )
        try:
            first = next(events, None)
        except ApiError as error:
            self._send(error.code, status_body(error))
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            if first is not None:
                self._chunk({"type": first[0], "object": first[1]})
                for kind, obj in events:
                    self._chunk({"type": kind, "object": obj})
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:  # the client stopped watching
            self.close_connection = True

    def _chunk(self, event: Obj) -> None:
        line = json.dumps(event).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
        self.wfile.flush()

    def _client_gone(self) -> bool:
        readable, _, _ = select.select([self.connection], [], [], 0)
        if not readable:
            return False
        try:
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _send(self, code: int, body: Obj) -> None:
        payload = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


_VERSION = {
    "major": "1",
    "minor": "33",
    "emulationMajor": "1",
    "emulationMinor": "33",
    "minCompatibilityMajor": "1",
    "minCompatibilityMinor": "32",
    "gitVersion": "v1.33.0-lap-double",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": now(),
    "goVersion": "go1.24.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}
