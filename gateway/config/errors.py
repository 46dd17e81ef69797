from __future__ import annotations

from pydantic import ValidationError


class SettingsError(ValueError):
    """Configuration rejected at load time; the message names each bad key."""


def describe_validation_error(source: str, err: ValidationError) -> str:
    lines = [f"invalid configuration in {source}:"]
    for item in err.errors():
        key = ".".join(str(p) for p in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key")
        else:
            lines.append(f"  {key}: {item['msg']} (got {item.get('input')!r})")
    return "\n".join(lines)
