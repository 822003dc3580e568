"""The web UI's views: server-rendered pages over the same services the REST API uses."""

from __future__ import annotations

from collections.abc import Callable

from django.http import Http404, HttpRequest

from lapsite.errors import NotFound


def get_or_404[T](lookup: Callable[..., T], key: str, request: HttpRequest) -> T:
    """``lookup(key)`` (a service's ``*_get``) as the request's user sees it, with its
    ``NotFound`` (also for another user's object) as the page's 404."""
    try:
        return lookup(key, viewer=request.user)
    except NotFound as error:
        raise Http404(error.message) from error
