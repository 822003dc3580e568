"""The web UI's views: server-rendered pages over the same services the REST API uses."""

from __future__ import annotations

from collections.abc import Callable

from django.http import Http404

from lapsite.errors import NotFound


def get_or_404[T](lookup: Callable[[str], T], key: str) -> T:
    """``lookup(key)`` (a service's ``*_get``), with its ``NotFound`` as the page's 404."""
    try:
        return lookup(key)
    except NotFound as error:
        raise Http404(error.message) from error
