from __future__ import annotations

import pytest

from gateway.adapters.auth import AdminToken
from gateway.api import GatewayError, Status


def _status(token: AdminToken, metadata) -> Status:
    with pytest.raises(GatewayError) as info:
        token.check(metadata, "Load")
    assert "s3cret" not in info.value.message
    return info.value.status


def test_the_token_is_checked_and_never_shown():
    token = AdminToken("s3cret")
    token.check([("authorization", "Bearer s3cret")], "Load")
    token.check([("Authorization", b"bearer  s3cret ")], "Load")
    assert _status(token, []) is Status.UNAUTHENTICATED
    assert _status(token, [("x-other", "Bearer s3cret")]) is Status.UNAUTHENTICATED
    assert _status(token, [("authorization", "Bearer s3cre")]) is Status.PERMISSION_DENIED
    assert _status(token, [("authorization", "Basic s3cret")]) is Status.PERMISSION_DENIED
    assert _status(token, [("authorization", "s3cret")]) is Status.PERMISSION_DENIED
    assert "s3cret" not in repr(token)


def test_without_a_token_admin_calls_are_off():
    for token in (AdminToken(None), AdminToken("")):
        assert not token.enabled
        assert _status(token, [("authorization", "Bearer x")]) is Status.FAILED_PRECONDITION
