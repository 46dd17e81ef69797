"""An MLServer 1.7 runtime serving an ONNX model through onnxruntime (MLServer ships none).

Loaded by MLServer from the model folder that ``mlserver_serve.py`` writes; ``parameters.uri``
is the ``model.onnx`` path. One CPU session with one intra-op thread, as the gateway's default.
"""
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


class OnnxRuntimeModel(MLModel):
    async def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(await get_model_uri(self._settings), options,
                                             providers=["CPUExecutionProvider"])
        self._inputs = [i.name for i in self._session.get_inputs()]
        self._outputs = [o.name for o in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {t.name: NumpyCodec.decode_input(t) for t in payload.inputs}
        missing = set(self._inputs) - set(feeds)
        if missing:
            raise ValueError(f"missing inputs: {sorted(missing)}")
        results = self._session.run(self._outputs, feeds)
        return InferenceResponse(model_name=self.name, id=payload.id,
                                 outputs=[NumpyCodec.encode_output(n, r) for n, r in zip(self._outputs, results)])
