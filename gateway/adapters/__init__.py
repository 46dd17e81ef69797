"""Protocol adapters: each owns its wire (converters, dtype table, call names) and calls only
:class:`gateway.core.DataPlane`. ``grpc_v1``: gateway.v1 over gRPC; ``admin_http``: /metrics,
/healthz, /readyz; ``tracing``: W3C traceparent and head sampling, shared by adapters."""
