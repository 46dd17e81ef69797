"""Bounded echoes: client text quoted cut with its length noted, shapes cut after a few dimensions,
whole messages cut to a byte budget that gRPC's metadata limits leave room for."""
from __future__ import annotations

import ast

from hypothesis import given
from hypothesis import strategies as st

from gateway.api import GatewayError, Status, dims, quote
from gateway.api.text import MESSAGE_LIMIT_BYTES, QUOTE_LIMIT_CHARS, bounded


def test_short_text_is_its_repr():
    assert quote("features") == "'features'"
    assert quote("") == "''"
    assert quote("it's") == '"it\'s"'


def test_long_text_is_cut_with_its_length_noted():
    shown = quote("m" * 1_048_576)
    assert shown == "'" + "m" * QUOTE_LIMIT_CHARS + "'… (1048576 chars)"


def test_escapes_do_not_widen_the_quote_past_the_limit():
    shown = quote("\x00" * 500)  # each character shows as four
    assert shown.endswith("… (500 chars)")
    assert len(shown.split("…")[0]) <= QUOTE_LIMIT_CHARS + 2
    assert quote("\u2028" * 10, limit=20).startswith("'\\u2028")


@given(st.text(max_size=400), st.integers(1, 100))
def test_a_quote_is_bounded_and_starts_like_the_text(text, limit):
    shown = quote(text, limit)
    head = shown.split("… (")[0]
    assert len(head) <= limit + 2
    if len(text) <= limit and len(repr(text)) <= limit + 2:
        assert shown == repr(text)
    else:
        assert shown.endswith(f"… ({len(text)} chars)")
        assert text.startswith(ast.literal_eval(head))  # (a repr of a prefix)


def test_shapes_are_cut_after_a_few_dimensions():
    assert dims([2, 3]) == "[2, 3]"
    assert dims([], sep=",") == "[]"
    assert dims([1] * 100_000) == "[1, 1, 1, 1, 1, 1, 1, 1, … (100000 dims)]"
    assert dims(range(20), limit=2, sep=",") == "[0,1,… (20 dims)]"


def test_messages_are_cut_to_the_byte_budget():
    assert bounded("short") == "short"
    long_ascii = "x" * 5000
    cut = bounded(long_ascii)
    assert len(cut.encode()) <= MESSAGE_LIMIT_BYTES and cut.endswith("… (5000 chars)")
    wide = "é" * 1000  # 2000 bytes
    cut = bounded(wide)
    assert len(cut.encode()) <= MESSAGE_LIMIT_BYTES and cut.startswith("éé") and cut.endswith("(1000 chars)")
    assert bounded("é" * 512) == "é" * 512  # exactly the budget


def test_lone_surrogates_become_escapes_so_grpc_can_send_the_message():
    text = bounded("label '\udcff'")
    assert text == "label '\\udcff'"
    text.encode()  # does not raise


def test_a_gateway_error_carries_a_bounded_message():
    exc = GatewayError(Status.NOT_FOUND, "model " + "m" * 2_000_000 + " not found")
    assert len(exc.message.encode()) <= MESSAGE_LIMIT_BYTES
    assert exc.message.startswith("model mmm") and str(exc) == exc.message
    assert exc.status is Status.NOT_FOUND
