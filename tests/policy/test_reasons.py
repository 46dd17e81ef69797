"""Fallback reasons: labels and telemetry codes defined once."""
from __future__ import annotations

from gateway.policy.reasons import REASON_LABELS, FallbackReason


def test_reason_codes_are_defined_once():
    assert REASON_LABELS == ("timeout", "error", "overloaded", "circuit_open", "invalid_output", "outlier")
    assert [int(FallbackReason.from_label(r)) for r in REASON_LABELS] == [1, 2, 3, 4, 5, 6]


def test_labels_round_trip_and_none_has_no_label():
    assert FallbackReason.NONE.label == "" and FallbackReason.from_label("") is FallbackReason.NONE
    for reason in FallbackReason:
        assert FallbackReason.from_label(reason.label) is reason
    assert FallbackReason.CIRCUIT_OPEN.label == "circuit_open"
