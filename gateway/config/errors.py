from __future__ import annotations

from collections.abc import Callable

from pydantic import ValidationError


class SettingsError(ValueError):
    """Configuration rejected at load time; the message names each bad key."""


def validation_lines(err: ValidationError, name: Callable[[tuple], str] | None = None) -> list[str]:
    """One indented line per error; ``name`` says how to name the key at a location (default:
    its dotted path)."""
    lines = []
    for item in err.errors():
        key = name(item["loc"]) if name is not None else ".".join(str(p) for p in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key")
        else:
            lines.append(f"  {key}: {item['msg']} (got {item.get('input')!r})")
    return lines


def describe_validation_error(source: str, err: ValidationError) -> str:
    return "\n".join([f"invalid configuration in {source}:"] + validation_lines(err))
