"""Bounded decoding of ``Content-Encoding`` bodies: gzip, deflate, br and zstd.

The sidecar decodes bodies to find stubs in them (requests) and real values (responses).
A decompression bomb — a small body that expands without end — must not take the sidecar's
memory with it: every decoder here refuses to produce more than ``limit`` bytes from one
input chunk (default ``MAX_EXPANSION``) and raises ``DecodeError`` instead, as it does for
data that is not valid in its encoding. Callers then forward the body as sent (buffered) or
drop the rest of the stream.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import brotli
from backports import zstd

MAX_EXPANSION = 128 * 1024 * 1024
"""Decoded bytes one input chunk may produce: above deflate's densest possible output for one
of mitmproxy's 64 KiB reads (1:1032, about 66 MiB), so no real gzip body trips it; a bomb
stops here instead of at the sidecar's memory."""

Decoder = Callable[[bytes], bytes]
"""Incremental decoding: each chunk in, its decoded bytes out; ``b""`` ends the body."""


class DecodeError(ValueError):
    """The body is not valid in its encoding, or it expands past the limit."""


def _too_large(limit: int) -> DecodeError:
    return DecodeError(f"expands past {limit} bytes")


def _zlib_decoder(wbits: int, limit: int) -> Decoder:
    decoder = zlib.decompressobj(wbits)

    def decode(chunk: bytes) -> bytes:
        try:
            data = decoder.decompress(chunk, limit + 1) if chunk else decoder.flush(limit + 1)
        except zlib.error as error:
            raise DecodeError(str(error)) from None
        if len(data) > limit or decoder.unconsumed_tail:
            raise _too_large(limit)
        return data

    return decode


def _deflate_decoder(limit: int) -> Decoder:
    """``deflate`` is zlib-wrapped per RFC 9110 but often raw: the first two bytes decide."""
    head = b""
    decoder: Decoder | None = None

    def decode(chunk: bytes) -> bytes:
        nonlocal head, decoder
        if decoder is None:
            head += chunk
            if chunk and len(head) < 2:
                return b""
            wrapped = len(head) >= 2 and head[0] & 0x0F == 8 and int.from_bytes(head[:2]) % 31 == 0
            decoder = _zlib_decoder(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS, limit)
            data, head = head, b""
            return decoder(data) + (b"" if chunk else decoder(b""))
        return decoder(chunk)

    return decode


def _brotli_decoder(limit: int) -> Decoder:
    decoder = brotli.Decompressor()

    def decode(chunk: bytes) -> bytes:
        if not chunk:
            return b""
        try:
            data: bytes = decoder.process(chunk, output_buffer_limit=limit + 1)
        except brotli.error as error:
            raise DecodeError(str(error)) from None
        if len(data) > limit or not decoder.can_accept_more_data():
            raise _too_large(limit)
        return data

    return decode


def _zstd_decoder(limit: int) -> Decoder:
    """Zstandard, frame after frame (a body may hold several)."""
    decoder = zstd.ZstdDecompressor()

    def decode(chunk: bytes) -> bytes:
        nonlocal decoder
        parts: list[bytes] = []
        size = 0
        while chunk:
            try:
                data = decoder.decompress(chunk, max_length=limit + 1 - size)
            except zstd.ZstdError as error:
                raise DecodeError(str(error)) from None
            size += len(data)
            if size > limit or (not decoder.eof and not decoder.needs_input):
                raise _too_large(limit)
            parts.append(data)
            chunk = b""
            if decoder.eof:
                chunk, decoder = decoder.unused_data, zstd.ZstdDecompressor()
        return b"".join(parts)

    return decode


def stream_decoder(encoding: str, limit: int = MAX_EXPANSION) -> Decoder | None:
    """A decoder for a body in ``encoding``, or None when the encoding is not one of ours."""
    if encoding in ("gzip", "x-gzip"):
        return _zlib_decoder(16 + zlib.MAX_WBITS, limit)
    if encoding == "deflate":
        return _deflate_decoder(limit)
    if encoding == "br":
        return _brotli_decoder(limit)
    if encoding == "zstd":
        return _zstd_decoder(limit)
    return None


def decode_body(raw: bytes, encoding: str, limit: int = MAX_EXPANSION) -> bytes:
    """The whole of a buffered body, decoded; ``DecodeError`` when it cannot be (or is not
    an encoding we know)."""
    decode = stream_decoder(encoding, limit)
    if decode is None:
        raise DecodeError(f"unknown encoding {encoding!r}")
    body = decode(raw) + decode(b"")
    if len(body) > limit:
        raise _too_large(limit)
    return body
