"""How the API picks a renderer for a request's ``Accept`` header."""

from __future__ import annotations

from rest_framework import exceptions
from rest_framework.negotiation import DefaultContentNegotiation


class FallbackNegotiation(DefaultContentNegotiation):
    """DRF's negotiation, answering in a view's first format (JSON for the API) rather than
    406 when the ``Accept`` header names nothing the view renders.

    A browser asks for ``text/html`` first, a client may ask for XML; most JSON APIs answer
    them in JSON, and a JSON error tells more than a 406. An unknown ``?format=`` (where a view
    honours one) is still DRF's 404.
    """

    def select_renderer(self, request, renderers, format_suffix=None):
        try:
            return super().select_renderer(request, renderers, format_suffix)
        except exceptions.NotAcceptable:
            return renderers[0], renderers[0].media_type
