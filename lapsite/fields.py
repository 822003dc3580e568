"""Serializer fields shared by the apps' APIs."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers


class StrictCharField(serializers.CharField):
    """A ``CharField`` that takes only JSON strings.

    DRF's turns a number into text (``123`` → ``"123"``), so a client that sent the wrong
    type would not hear of it; here any value that is not a string is a 400,
    ``<field>: must be a string``.
    """

    default_error_messages = {"invalid": "must be a string"}

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)
