"""Model monitoring that reads telemetry (never the request path): today the recent-window
mean shift of input features that ``GetStats`` reports; drift against a reference, label
joins, alert rules and traffic experiments land here next."""
from .shift import MeanShift

__all__ = ["MeanShift"]
