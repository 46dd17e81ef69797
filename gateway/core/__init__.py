"""The protocol-independent core. Adapters call :class:`DataPlane` (its whole API, in the plain
types of :mod:`gateway.api`); where each decision is made:

- :mod:`.pipeline`: the order of the stages for one request, and the fallback walk.
- :mod:`.context`: per-attempt state (timeline, rows, deadline share, arm, shadow flag).
- :mod:`.validation`: inputs against the model's declared tensors.
- :mod:`.registry`: routing to a loaded version; :mod:`.assembly`: building one.
- :mod:`.batching`: queues and batches; :mod:`.placement`: event loop or worker thread.
- :mod:`.postprocess`: the classifier head (confidence, class, label).
- :mod:`.observers`: what may watch requests, decisions and batches (passed in, never global).

Nothing here imports grpc, an exporter or monitoring.
"""
from .dataplane import DataPlane

__all__ = ["DataPlane"]
