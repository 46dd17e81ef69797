"""gateway.v1 over gRPC: ``server`` (the grpc.aio server with health and reflection),
``servicers``, ``converters`` (protobuf <-> gateway.api types), ``dtypes`` (the wire's
element types)."""
