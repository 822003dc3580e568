"""The API's request body parser."""

from __future__ import annotations

from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, with too deep a nesting a parse error (400) rather than a 500.

    ``json`` decodes arrays and objects recursively: a few kilobytes of ``[[[[…`` exceed the
    interpreter's recursion limit, and DRF catches only ``ValueError``.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply") from None
