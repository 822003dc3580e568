"""Bounded body decoding: every encoding round-trips, bombs and bad data raise DecodeError."""

from __future__ import annotations

import gzip
import zlib

import brotli
import pytest
from backports import zstd

from sidecar.decoding import DecodeError, decode_body, stream_decoder

TEXT = b"lap_stub_GH_" + bytes(range(256)) * 40

ENCODERS = {
    "gzip": gzip.compress,
    "x-gzip": gzip.compress,
    "deflate": zlib.compress,
    "br": brotli.compress,
    "zstd": zstd.compress,
}


@pytest.mark.parametrize("encoding", sorted(ENCODERS))
def test_buffered_body_round_trips(encoding):
    assert decode_body(ENCODERS[encoding](TEXT), encoding) == TEXT


def test_raw_deflate_is_recognised():
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    assert decode_body(compressor.compress(TEXT) + compressor.flush(), "deflate") == TEXT


@pytest.mark.parametrize("encoding", sorted(ENCODERS))
def test_stream_decodes_in_one_byte_chunks(encoding):
    decode = stream_decoder(encoding)
    assert decode is not None
    encoded = ENCODERS[encoding](TEXT)
    out = b"".join(decode(encoded[i : i + 1]) for i in range(len(encoded))) + decode(b"")
    assert out == TEXT


def test_zstd_body_of_several_frames():
    assert decode_body(zstd.compress(TEXT) + zstd.compress(b"tail"), "zstd") == TEXT + b"tail"


@pytest.mark.parametrize("encoding", sorted(ENCODERS))
def test_bomb_is_refused_not_expanded(encoding):
    bomb = ENCODERS[encoding](bytes(8 * 1024 * 1024))
    assert len(bomb) < 64 * 1024
    with pytest.raises(DecodeError, match="expands past"):
        decode_body(bomb, encoding, limit=1024 * 1024)
    decode = stream_decoder(encoding, limit=1024 * 1024)
    with pytest.raises(DecodeError, match="expands past"):
        decode(bomb)


@pytest.mark.parametrize("encoding", sorted(ENCODERS))
def test_invalid_data_raises(encoding):
    with pytest.raises(DecodeError):
        decode_body(b"\xff" * 64 + b"not compressed at all", encoding)


def test_unknown_encoding_raises():
    with pytest.raises(DecodeError, match="unknown encoding"):
        decode_body(b"x", "compress")
    assert stream_decoder("compress") is None
