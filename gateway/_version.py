"""The package version (its own module: nothing imports the package root, see pyproject's
import-linter contracts)."""

__version__ = "0.1.0"
