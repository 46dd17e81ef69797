"""The resource every signal carries: service name/version/instance plus ``OTEL_RESOURCE_ATTRIBUTES``."""
from __future__ import annotations

import uuid

from opentelemetry.sdk.resources import Resource

DEFAULT_SERVICE_NAME = "onnx-inference-gateway"


def make_resource(extra: dict[str, str | int] | None = None) -> Resource:
    """``Resource.create`` reads ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES``; under
    them go our defaults: ``service.name``, ``service.version`` and ``service.instance.id``
    (a random UUID per process: each worker of ``gateway serve --workers`` has its own, and a
    restarted one a new one), and over them ``extra`` (``gateway.worker.index``)."""
    from gateway._version import __version__

    detected = Resource.create({})
    attrs = {"service.instance.id": str(uuid.uuid4()), "service.version": __version__,
             **detected.attributes, **(extra or {})}
    if extra and "gateway.worker.index" in extra and "service.instance.id" in detected.attributes:
        # (one id set for the server in OTEL_RESOURCE_ATTRIBUTES: each worker's must differ)
        given = str(detected.attributes["service.instance.id"])
        attrs["service.instance.id"] = f"{given}-{extra['gateway.worker.index']}"
    if str(attrs.get("service.name", "")).startswith("unknown_service"):
        attrs["service.name"] = DEFAULT_SERVICE_NAME
    return Resource(attrs, detected.schema_url)
