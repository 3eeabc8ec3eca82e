"""A value valid against a JSON Schema, for the simulator's structured
answers: a forced tool's arguments and a response_format answer. It reads
the keywords models are given in practice (Pydantic's and OpenAI's strict
schemas): type, properties, required, items, enum, const, anyOf / oneOf /
allOf, $ref into $defs, minItems, minimum, minLength. Strings are the
question itself, so an answer still says what it answered."""

from __future__ import annotations

from typing import Any

__all__ = ["instance"]


def instance(schema: Any, text: str, root: Any = None, depth: int = 0) -> Any:
    root = schema if root is None else root
    if not isinstance(schema, dict) or depth > 20:
        return text
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        return instance(target, text, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for combined in ("anyOf", "oneOf", "allOf"):
        options = schema.get(combined)
        if isinstance(options, list) and options:
            usable = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")] or options
            return instance(usable[0], text, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        properties = schema.get("properties")
        if not isinstance(properties, dict):
            return {}
        return {name: instance(sub, text, root, depth + 1) for name, sub in properties.items()}
    if kind == "array":
        count = max(1, int(schema.get("minItems", 1) or 1))
        return [instance(schema.get("items", {}), text, root, depth + 1) for _ in range(count)]
    if kind == "integer":
        return int(schema.get("minimum", 1) if isinstance(schema.get("minimum"), (int, float)) else 1)
    if kind == "number":
        return float(schema.get("minimum", 1.5) if isinstance(schema.get("minimum"), (int, float)) else 1.5)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    minimum = schema.get("minLength")
    value = text or "x"
    return value * (int(minimum) // len(value) + 1) if isinstance(minimum, int) and minimum > len(value) else value
