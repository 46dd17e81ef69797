"""Model monitoring that reads telemetry (never the request path): today the recent-window
mean shift of input features that ``GetStats`` reports; drift against a reference, label
joins, alert rules and traffic experiments land here next."""
from .drift import (DEFAULT_THRESHOLDS, PSI_EPS, DriftThresholds, FeatureDrift, Grade, HistogramWindows,
                    Snapshot, Threshold, Window, feature_drift, grade, js_distance, ks_binned, psi)
from .shift import MeanShift

__all__ = ["MeanShift",
           "DEFAULT_THRESHOLDS", "PSI_EPS", "DriftThresholds", "FeatureDrift", "Grade", "HistogramWindows",
           "Snapshot", "Threshold", "Window", "feature_drift", "grade", "js_distance", "ks_binned", "psi"]
