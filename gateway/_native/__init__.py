"""Compiled telemetry kernels (built from ext/)."""
