"""Read an HTTP answer's body as a stream, never more than a limit, compressed bodies included.

``requests`` would read a 128 MiB answer whole, and inflate a small gzip body to whatever it
holds. Here the body is pulled in chunks, decompressed with a bound per chunk, and refused as
soon as it passes the limit, so memory stays at about the limit whatever the provider sends.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import requests

#: The encodings we offer a provider (``Accept-Encoding``), and so the only ones we decode.
ACCEPT_ENCODING = "gzip, deflate"
_CHUNK = 16 * 1024


class BodyRefused(Exception):
    """The body can't be read within the rules: ``reason`` is "too big", "encoding" (one we did
    not offer) or "undecodable" (compressed data that does not decompress)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def read_bounded(response: requests.Response, limit: int) -> bytes:
    """``response``'s body (opened with ``stream=True``), at most ``limit`` bytes of it once
    decoded; ``BodyRefused`` otherwise. Network errors propagate as the transport raises them."""
    declared = response.headers.get("Content-Length", "").strip()
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise BodyRefused("too big")
    decode = _decoder(response.headers.get("Content-Encoding", ""))
    if decode is None:
        raise BodyRefused("encoding")
    chunks: list[bytes] = []
    size = 0
    for chunk in response.raw.stream(_CHUNK, decode_content=False):
        try:
            data = decode(chunk, limit + 1 - size)
        except zlib.error:
            raise BodyRefused("undecodable") from None
        size += len(data)
        if size > limit:
            raise BodyRefused("too big")
        chunks.append(data)
    if isinstance(decode, _Inflater) and not decode.inflater.eof:
        raise BodyRefused("undecodable")  # cut short: the compressed stream never ended
    return b"".join(chunks)


class _Inflater:
    """Decodes successive chunks of a gzip or deflate body, each into at most ``most`` bytes, so
    a small compressed body can't expand past the size limit in memory (reaching ``most``
    means "too big" to the caller)."""

    def __init__(self, raw_deflate_possible: bool) -> None:
        # 47: a gzip or zlib header, detected. Some servers send raw deflate as "deflate".
        self.inflater = zlib.decompressobj(47)
        self.raw_deflate_possible = raw_deflate_possible

    def __call__(self, chunk: bytes, most: int) -> bytes:
        try:
            return self.inflater.decompress(chunk, most)
        except zlib.error:
            if not self.raw_deflate_possible:
                raise
            self.raw_deflate_possible = False
            self.inflater = zlib.decompressobj(-15)
            return self.inflater.decompress(chunk, most)


def _decoder(content_encoding: str) -> Callable[[bytes, int], bytes] | None:
    """A function decoding successive chunks of a body in ``content_encoding`` into at most the
    given number of bytes each, or None for an encoding we did not offer."""
    encoding = content_encoding.strip().lower()
    if encoding in ("", "identity"):
        return lambda chunk, _most: chunk
    if encoding in ("gzip", "x-gzip", "deflate"):
        return _Inflater(raw_deflate_possible=encoding == "deflate")
    return None
