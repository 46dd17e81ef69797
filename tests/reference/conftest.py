"""The ``impl`` fixture: each parity test runs once on the native kernels, once on the twins."""
from __future__ import annotations

import pytest

from tests.reference.impls import NATIVE, TWIN


@pytest.fixture(params=[NATIVE, TWIN], ids=["native", "twin"])
def impl(request):
    """The kernels of one implementation (native or twin), as a namespace."""
    return request.param
