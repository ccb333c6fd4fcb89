"""Compare a client model with a service's OpenAPI component, field by field.

Types are reduced to a small canonical form (``integer``, ``string``, ``array[number]``,
``map[any]``, ``object`` for a nested model, which has its own entry in the comparison table)
so the two pydantic-generated schemas compare by meaning, not by spelling. A field the server
may answer ``null`` must be nullable in the client; the client may be more permissive.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


def canonical(schema: dict[str, Any], definitions: dict[str, Any]) -> frozenset[str]:
    """The set of alternatives a JSON schema allows, each as a canonical type string.

    ``definitions`` resolves ``$ref``: an enum is its values' type, a model is ``object``.
    """
    if "$ref" in schema:
        target = definitions.get(schema["$ref"].rsplit("/", 1)[-1], {})
        return canonical(target, definitions) if "enum" in target else frozenset({"object"})
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return frozenset().union(*(canonical(s, definitions) for s in schema[key]))
    if "allOf" in schema and len(schema["allOf"]) == 1:
        return canonical(schema["allOf"][0], definitions)
    if "enum" in schema or "const" in schema:
        values = schema.get("enum", [schema.get("const")])
        return frozenset(_json_type(v) for v in values)
    kind = schema.get("type")
    if isinstance(kind, list):
        return frozenset().union(*(canonical({**schema, "type": k}, definitions) for k in kind))
    if kind == "array":
        items = schema.get("items")
        inner = "|".join(sorted(canonical(items, definitions))) if items else "any"
        return frozenset({f"array[{inner}]"})
    if kind == "object":
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            return frozenset({f"map[{'|'.join(sorted(canonical(extra, definitions)))}]"})
        return frozenset({"object" if schema.get("properties") else "map[any]"})
    if kind == "string" and schema.get("format") == "date-time":
        return frozenset({"datetime"})
    if kind in ("string", "integer", "number", "boolean", "null"):
        return frozenset({kind})
    return frozenset({"any"})


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string"


def component(openapi: dict[str, Any], name: str, *, request: bool) -> dict[str, Any] | None:
    """The named schema; FastAPI splits a model used both ways into ``-Input`` and ``-Output``."""
    schemas = openapi.get("components", {}).get("schemas", {})
    suffixes = ("", "-Input", "-Output") if request else ("", "-Output", "-Input")
    return next((schemas[name + s] for s in suffixes if name + s in schemas), None)


def differences(client: type[BaseModel], server: dict[str, Any], server_definitions: dict[str, Any], *,
                request: bool) -> list[str]:
    """Every way ``client`` disagrees with the server's component ``server``."""
    generated = client.model_json_schema(mode="serialization" if request else "validation")
    mine, my_definitions = generated["properties"], generated.get("$defs", {})
    theirs = server.get("properties", {})
    problems = [f"field {f!r} only in the server" for f in sorted(set(theirs) - set(mine))]
    problems += [f"field {f!r} only in the client" for f in sorted(set(mine) - set(theirs))]
    for name in sorted(set(mine) & set(theirs)):
        a, b = canonical(mine[name], my_definitions), canonical(theirs[name], server_definitions)
        if a - {"null"} != b - {"null"}:
            problems.append(f"field {name!r}: client {sorted(a)} vs server {sorted(b)}")
        elif "null" in b and "null" not in a:
            problems.append(f"field {name!r}: the server may send null, the client refuses it")
    return problems
