"""The Open Inference Protocol (KServe v2) over gRPC, as Triton serves it:
``inference.GRPCInferenceService`` on the gateway's gRPC port, for unmodified clients
(tritonclient.grpc). ``servicers`` (the calls), ``converters`` (protobuf <-> gateway.api
types), ``datatypes`` (the protocol's element type names). The messages are protos/oip.proto."""
from .servicers import SERVICE, InferenceServicer, ModelControl

__all__ = ["SERVICE", "InferenceServicer", "ModelControl"]
