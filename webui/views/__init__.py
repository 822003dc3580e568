"""The web UI's views: server-rendered pages over the same services the REST API uses."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from urllib.parse import urlsplit

from django.contrib.auth import decorators
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse

from lapsite.errors import NotFound


def login_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Django's ``login_required``, except for htmx's requests (a page polling a part of
    itself). htmx follows a redirect itself and would swap the whole login page into that
    part, so a user no longer logged in gets ``HX-Redirect`` instead: the browser goes to
    the login form, with the polling page as ``next``."""
    django_view = decorators.login_required(view)

    @wraps(view)
    def checked(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        if request.user.is_authenticated or "HX-Request" not in request.headers:
            return django_view(request, *args, **kwargs)
        page = urlsplit(request.headers.get("HX-Current-URL", "/"))
        back = page.path + (f"?{page.query}" if page.query else "")
        response = HttpResponse(status=204)  # htmx swaps nothing for a 204
        response["HX-Redirect"] = redirect_to_login(back)["Location"]
        return response

    return checked


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
