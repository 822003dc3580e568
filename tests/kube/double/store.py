"""The API server double's storage: objects as JSON dicts, one resourceVersion sequence, a
bounded history of changes for watches, label and field selectors, and owner-reference
garbage collection.

Everything is guarded by one condition variable; watchers wait on it. ``listeners`` are
called (outside the lock) after every change, which is how the kubelet double hears of pods.
"""

from __future__ import annotations

import copy
import datetime
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

HISTORY = 2000  # changes kept for watches; an older resourceVersion gets 410 Gone

Obj = dict[str, Any]
Listener = Callable[[str, str, Obj], None]  # (resource, event type, object)


class ApiError(Exception):
    """An answer other than success: becomes a ``Status`` object with this code."""

    def __init__(self, code: int, reason: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details


def not_found(resource: str, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{resource} "{name}" not found', name=name, kind=resource)


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- selectors -----------------------------------------------------------------------------

_REQUIREMENT = re.compile(
    r"\s*(?P<neg>!)?(?P<key>[A-Za-z0-9_./-]+)\s*"
    r"(?:(?P<op>==|=|!=)\s*(?P<value>[A-Za-z0-9_.-]*)|\s+(?P<set>in|notin)\s*\((?P<values>[^)]*)\))?\s*"
)


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: tuple[str, ...] = ()

    def matches(self, value: str | None) -> bool:
        if self.op == "exists":
            return value is not None
        if self.op == "!exists":
            return value is None
        if self.op in ("=", "in"):
            return value in self.values
        return value not in self.values  # "!=" and "notin" match a missing key too


def _split(selector: str) -> list[str]:
    """Split on commas outside parentheses."""
    parts, depth, current = [], 0, ""
    for char in selector:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [part for part in parts if part.strip()]


def parse_selector(selector: str | None) -> list[Requirement]:
    """A label (or field) selector; ``ApiError(400)`` when it does not parse."""
    requirements = []
    for part in _split(selector or ""):
        match = _REQUIREMENT.fullmatch(part)
        if match is None:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {part!r}")
        key, op = match["key"], match["op"] or match["set"]
        if op is None:
            requirements.append(Requirement(key, "!exists" if match["neg"] else "exists"))
        elif match["neg"]:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {part!r}")
        elif op in ("in", "notin"):
            values = tuple(v.strip() for v in match["values"].split(",") if v.strip())
            requirements.append(Requirement(key, op, values))
        else:
            requirements.append(Requirement(key, "!=" if op == "!=" else "=", (match["value"],)))
    return requirements


def _field(obj: Obj, path: str) -> str | None:
    value: Any = obj
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return None if value is None else str(value)


def matches(obj: Obj, labels: list[Requirement], fields: list[Requirement]) -> bool:
    object_labels = obj.get("metadata", {}).get("labels") or {}
    return all(r.matches(object_labels.get(r.key)) for r in labels) and all(
        r.matches(_field(obj, r.key)) for r in fields
    )


# --- the store -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    resource_version: int
    resource: str
    namespace: str
    type: str  # ADDED | MODIFIED | DELETED
    obj: Obj


class Store:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.objects: dict[tuple[str, str, str], Obj] = {}
        self.history: deque[Change] = deque(maxlen=HISTORY)
        self.version = 0
        self.listeners: list[Listener] = []
        self.closed = False

    def _record(self, resource: str, namespace: str, kind: str, obj: Obj) -> Obj:
        """Bump the resourceVersion, stamp it on ``obj`` and remember the change (locked)."""
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        self.history.append(Change(self.version, resource, namespace, kind, copy.deepcopy(obj)))
        self.cond.notify_all()
        return copy.deepcopy(obj)

    def _notify(self, resource: str, kind: str, obj: Obj) -> None:
        for listener in list(self.listeners):
            listener(resource, kind, obj)

    def create(self, resource: str, namespace: str, obj: Obj) -> Obj:
        metadata = obj.setdefault("metadata", {})
        name = metadata["name"]
        with self.cond:
            if (resource, namespace, name) in self.objects:
                raise ApiError(
                    409,
                    "AlreadyExists",
                    f'{resource} "{name}" already exists',
                    name=name,
                    kind=resource,
                )
            metadata.update(
                namespace=namespace, uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1
            )
            self.objects[(resource, namespace, name)] = obj
            stored = self._record(resource, namespace, "ADDED", obj)
        self._notify(resource, "ADDED", stored)
        return stored

    def get(self, resource: str, namespace: str, name: str) -> Obj:
        with self.cond:
            obj = self.objects.get((resource, namespace, name))
            if obj is None:
                raise not_found(resource, name)
            return copy.deepcopy(obj)

    def list(
        self, resource: str, namespace: str, labels: list[Requirement], fields: list[Requirement]
    ) -> tuple[list[Obj], str]:
        with self.cond:
            items = [
                copy.deepcopy(obj)
                for (kind, ns, _), obj in sorted(self.objects.items())
                if kind == resource and ns == namespace and matches(obj, labels, fields)
            ]
            return items, str(self.version)

    def update(
        self, resource: str, namespace: str, name: str, change: Callable[[Obj], None]
    ) -> Obj:
        """Apply ``change`` to a copy of the object and store it (``ApiError`` from ``change``
        leaves the object as it was)."""
        with self.cond:
            current = self.objects.get((resource, namespace, name))
            if current is None:
                raise not_found(resource, name)
            obj = copy.deepcopy(current)
            change(obj)
            self.objects[(resource, namespace, name)] = obj
            stored = self._record(resource, namespace, "MODIFIED", obj)
        self._notify(resource, "MODIFIED", stored)
        return stored

    def remove(self, resource: str, namespace: str, name: str) -> Obj:
        """Delete the object now, then every object it owns (garbage collection)."""
        with self.cond:
            obj = self.objects.pop((resource, namespace, name), None)
            if obj is None:
                raise not_found(resource, name)
            stored = self._record(resource, namespace, "DELETED", obj)
            uid = obj["metadata"]["uid"]
            owned = [
                key
                for key, other in self.objects.items()
                if key[1] == namespace
                and any(
                    ref.get("uid") == uid for ref in other["metadata"].get("ownerReferences") or []
                )
            ]
        self._notify(resource, "DELETED", stored)
        for kind, ns, other in owned:
            try:
                self.remove(kind, ns, other)
            except ApiError:  # removed meanwhile
                pass
        return stored

    def watch(
        self,
        resource: str,
        namespace: str,
        since: str | None,
        labels: list[Requirement],
        fields: list[Requirement],
        deadline: float,
        is_closed: Callable[[], bool],
    ) -> Iterator[tuple[str, Obj]]:
        """Changes after ``since`` (or every matching object as ADDED, then changes when
        ``since`` is empty or "0") until ``deadline`` (``time.monotonic``) or the client left."""
        with self.cond:
            if since in (None, "", "0"):
                position = self.version
                initial = [
                    ("ADDED", copy.deepcopy(obj))
                    for (kind, ns, _), obj in sorted(self.objects.items())
                    if kind == resource and ns == namespace and matches(obj, labels, fields)
                ]
            else:
                position = int(since)
                oldest = self.history[0].resource_version if self.history else self.version + 1
                if position < oldest - 1 and position < self.version:
                    raise ApiError(410, "Expired", f"too old resource version: {since} ({oldest})")
                initial = []
        yield from initial
        while True:
            with self.cond:
                pending = [
                    change
                    for change in self.history
                    if change.resource_version > position
                    and change.resource == resource
                    and change.namespace == namespace
                ]
                position = max([position, *(c.resource_version for c in pending)])
                if not pending:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self.closed:
                        return
                    self.cond.wait(min(remaining, 0.5))
            for change in pending:
                if matches(change.obj, labels, fields):
                    yield change.type, copy.deepcopy(change.obj)
            if not pending and is_closed():
                return

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()
