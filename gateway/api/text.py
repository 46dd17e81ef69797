"""Bounded echoes of client-supplied text in error messages.

A status message travels as the ``grpc-message`` trailer, which gRPC percent-encodes (up to three
bytes per byte) and which the peer refuses past its metadata limit (8 KiB soft, 16 KiB hard by
default): a message quoting a 1 MB model name in full would turn NOT_FOUND into
RESOURCE_EXHAUSTED. So every client string a message quotes is cut with :func:`quote` (names) or
:func:`dims` (shapes), and :class:`gateway.api.GatewayError` cuts the whole message to
:data:`MESSAGE_LIMIT_BYTES` as the last line of defence (server text, such as an onnxruntime
error, can be long too).
"""
from __future__ import annotations

from collections.abc import Sequence

QUOTE_LIMIT_CHARS = 80      # of a quoted name: model, version, tensor and output names, request ids
DIMS_LIMIT = 8              # dimensions of a shape quoted before it is cut
MESSAGE_LIMIT_BYTES = 1024  # UTF-8 bytes of a whole status message (at most 3 KiB once percent-encoded)


def quote(text: str, limit: int = QUOTE_LIMIT_CHARS) -> str:
    """``repr(text)``, cut to about ``limit`` characters with the original length noted.

    Only the head is ever rendered, so quoting a megabyte name costs what quoting ``limit``
    characters does.
    """
    head = text[:limit]
    shown = repr(head)
    while len(shown) > limit + 2:  # escapes (\x00, \u2028) widen the repr: show fewer characters
        head = head[:len(head) * limit // len(shown)]
        shown = repr(head)
    if len(head) < len(text):
        return f"{shown}… ({len(text)} chars)"
    return shown


def dims(shape: Sequence[int], limit: int = DIMS_LIMIT, sep: str = ", ") -> str:
    """A shape as ``[d0, d1, ...]``, cut after ``limit`` dimensions with the rank noted."""
    if len(shape) <= limit:
        return "[" + sep.join(str(d) for d in shape) + "]"
    return "[" + sep.join(str(shape[i]) for i in range(limit)) + f"{sep}… ({len(shape)} dims)]"


def bounded(message: str, limit_bytes: int = MESSAGE_LIMIT_BYTES) -> str:
    """``message`` if its UTF-8 form fits in ``limit_bytes``, else its head with the length noted.

    Lone surrogates (a str from a non-UTF-8 file name, say) become backslash escapes: gRPC could
    not encode the message otherwise, and the call would end UNKNOWN instead of with its status.
    """
    try:
        encoded = message.encode()
    except UnicodeEncodeError:
        encoded = message.encode("utf-8", "backslashreplace")
        message = encoded.decode()
    if len(encoded) <= limit_bytes:
        return message
    suffix = f"… ({len(message)} chars)"
    head = encoded[:limit_bytes - len(suffix.encode())].decode("utf-8", "ignore")  # (drops a cut character)
    return head + suffix
