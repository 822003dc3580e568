"""The web UI's views: server-rendered pages over the same services the REST API uses."""

from __future__ import annotations

from collections.abc import Callable

from django.http import Http404, HttpRequest

from lapsite.errors import NotFound


def page_number(request: HttpRequest) -> int:
    """The ``page`` query parameter: 1 when it is missing or not a page number (at most six
    digits, so the offset stays a number the database takes)."""
    value = request.GET.get("page", "")
    return max(1, int(value)) if value.isascii() and value.isdigit() and len(value) <= 6 else 1


def pager(request: HttpRequest, page: int, *, has_older: bool) -> dict:
    """The template context of ``webui/_pager.html``: links to the pages either side,
    keeping the rest of the query (search, filters)."""
    newer, older = request.GET.copy(), request.GET.copy()
    newer["page"], older["page"] = str(page - 1), str(page + 1)
    return {
        "page": page,
        "newer": newer.urlencode() if page > 1 else "",
        "older": older.urlencode() if has_older else "",
    }


def get_or_404[T](lookup: Callable[..., T], key: str, request: HttpRequest) -> T:
    """``lookup(key)`` (a service's ``*_get``) as the request's user sees it, with its
    ``NotFound`` (also for another user's object) as the page's 404."""
    try:
        return lookup(key, viewer=request.user)
    except NotFound as error:
        raise Http404(error.message) from error
