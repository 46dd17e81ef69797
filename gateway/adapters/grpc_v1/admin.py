"""``gateway.v1.Admin``: traffic administration over gRPC (the lifecycle's
:class:`~gateway.api.traffic.TrafficControl`), every call but ``GetTraffic`` behind the admin token
(:mod:`gateway.adapters.auth`). Errors map to statuses as on ``gateway.v1.Gateway``."""
from __future__ import annotations

import grpc

from ..._proto import gateway_pb2 as pb
from ...api import GatewayError, Status
from ...api.traffic import TrafficControl, TrafficState
from ..auth import AdminToken
from .servicers import _fail, _parsing

SERVICE = "gateway.v1.Admin"


def _state(s: TrafficState) -> pb.TrafficState:
    return pb.TrafficState(model=s.model, weights=s.weights, shares=s.shares, latest_version=s.latest,
                           shadow=s.shadow, rolled_back=list(s.rolled_back), has_previous=s.previous is not None,
                           previous=s.previous or {})


class AdminServicer:
    name = SERVICE

    def __init__(self, traffic: TrafficControl | None, admin: AdminToken) -> None:
        self._traffic = traffic
        self._admin = admin

    def method_handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        def unary(kind, handler, out):
            return grpc.unary_unary_rpc_method_handler(_parsing(kind, handler), request_deserializer=None,
                                                       response_serializer=out.SerializeToString)
        return {
            "GetTraffic": unary(pb.TrafficRequest, self.GetTraffic, pb.TrafficState),
            "SetTraffic": unary(pb.SetTrafficRequest, self.SetTraffic, pb.TrafficState),
            "Promote": unary(pb.PromoteRequest, self.Promote, pb.TrafficState),
            "RollBack": unary(pb.TrafficRequest, self.RollBack, pb.TrafficState),
            "SetShadow": unary(pb.SetShadowRequest, self.SetShadow, pb.TrafficState),
            "ReloadProfiles": unary(pb.TrafficRequest, self.ReloadProfiles, pb.ReloadProfilesResponse),
        }

    def _control(self, context, what: str | None) -> TrafficControl:
        if what is not None:
            self._admin.check(context.invocation_metadata(), what)
        if self._traffic is None:
            raise GatewayError(Status.FAILED_PRECONDITION, "this server has no traffic control")
        return self._traffic

    async def _run(self, context, what: str | None, call, model: str = "", *, reload: bool = False):
        try:
            control = self._control(context, what)
            answer = await call(control, context.peer() or "")
            if what is not None:   # a change: every worker of the server takes it
                took, others = await control.propagate(model, reload=reload)
                if others:
                    context.set_trailing_metadata((("gateway-workers-applied", f"{took + 1}/{others + 1}"),))
            return answer
        except GatewayError as exc:
            await _fail(context, exc)
            return None

    async def GetTraffic(self, request, context):
        async def call(t, peer):
            return _state(t.state(request.model))
        return await self._run(context, None, call)

    async def SetTraffic(self, request, context):
        async def call(t, peer):
            return _state(t.set_weights(request.model, dict(request.weights), request.reason, peer))
        return await self._run(context, "SetTraffic", call, request.model)

    async def Promote(self, request, context):
        async def call(t, peer):
            return _state(t.promote(request.model, request.version, request.reason, peer))
        return await self._run(context, "Promote", call, request.model)

    async def RollBack(self, request, context):
        async def call(t, peer):
            return _state(t.roll_back(request.model, request.reason, peer))
        return await self._run(context, "RollBack", call, request.model)

    async def SetShadow(self, request, context):
        async def call(t, peer):
            return _state(t.set_shadow(request.model, dict(request.shares), request.reason, peer))
        return await self._run(context, "SetShadow", call, request.model)

    async def ReloadProfiles(self, request, context):
        async def call(t, peer):
            return pb.ReloadProfilesResponse(references=await t.reload_profiles(request.model, request.reason, peer))
        return await self._run(context, "ReloadProfiles", call, request.model, reload=True)
