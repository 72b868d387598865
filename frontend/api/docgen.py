"""Writes the REST API's page from the app's own OpenAPI description.

    python -m frontend.api.docgen > docs/api.md

``tests/test_docs.py`` fails while the committed page differs from what this prints, so the page
can only say what the routes and their models say.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any, cast

from fastapi import FastAPI
from fastapi.routing import APIWebSocketRoute

from ..services import Frontend
from . import routes
from .app import create_app

__all__ = ["COMMAND", "app", "main", "render"]

COMMAND = "python -m frontend.api.docgen > docs/api.md"

Schema = dict[str, Any]

# The order a reader meets the resources in: who calls, where things run, what runs, how it is
# connected, then what happened.  Tags not listed here follow, alphabetically.
TAGS = {
    "auth": "Authentication", "organizations": "Organizations", "users": "Users", "zones": "Zones",
    "hypervisors": "Hypervisors", "flavors": "Flavors", "images": "Images", "keypairs": "Keypairs",
    "server-groups": "Server groups", "instances": "Instances", "volumes": "Volumes",
    "snapshots": "Snapshots", "networks": "Networks",
    "subnets": "Subnets", "ports": "Ports", "routers": "Routers", "floating-ips": "Floating IPs",
    "security-groups": "Security groups", "tasks": "Tasks", "events": "Events", "audit": "Audit log", "tree": "Message tree",
}
METHODS = ("get", "post", "put", "patch", "delete", "head", "options", "trace")

# JSON Schema keywords shown as constraints, in this order.
LIMITS = ("minLength", "maxLength", "pattern", "minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum",
          "minItems", "maxItems")


def app() -> FastAPI:
    # The OpenAPI description comes from the routes and their models alone and no request is
    # served, so the app needs no frontend (database, tree) behind it.
    return create_app(cast(Frontend, None))


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines + [""]


def _number(value: Any) -> str:
    # Pydantic writes integer bounds as floats (le=3600 becomes 3600.0).
    return str(int(value)) if isinstance(value, float) and value.is_integer() else json.dumps(value)


def _variants(schema: Schema) -> list[Schema]:
    """The alternatives of a union (``X | None`` among them), or the schema itself."""
    return schema.get("anyOf") or schema.get("oneOf") or [schema]


def _model(schema: Schema) -> Schema | None:
    """The ``$ref`` of the model a request or an answer carries, optional (``Model | None``) or not."""
    return next((v for v in _variants(schema) if "$ref" in v), None)


class _Schemas:
    """The components of one OpenAPI description, to name and unfold the models that ``$ref`` points at."""

    def __init__(self, spec: Schema) -> None:
        self.models: dict[str, Schema] = spec.get("components", {}).get("schemas", {})

    def resolve(self, ref: Schema) -> Schema:
        return self.models[ref["$ref"].rsplit("/", 1)[-1]]

    def type_name(self, schema: Schema) -> str:
        if "$ref" in schema:
            return f"`{self.resolve(schema).get('title', '?')}`"
        variants = _variants(schema)
        if len(variants) > 1:
            kinds = [self.type_name(v) for v in variants if v.get("type") != "null"]
            return " or ".join(kinds) + (" or null" if len(kinds) < len(variants) else "")
        kind = schema.get("type", "any")
        if kind == "array":
            return "array of " + self._inner(schema.get("items", {}))
        values = schema.get("additionalProperties")
        if kind == "object" and isinstance(values, dict) and values:
            return "map of string to " + self._inner(values)
        return f"{kind} ({schema['format']})" if "format" in schema else kind

    def _inner(self, schema: Schema) -> str:
        name = self.type_name(schema)
        return f"({name})" if " or " in name else name

    def constraints(self, schema: Schema) -> str:
        parts: list[str] = []
        for variant in _variants(schema):
            parts += [f"{key} `{variant[key]}`" if key == "pattern" else f"{key} {_number(variant[key])}"
                      for key in LIMITS if key in variant]
            if "enum" in variant:
                parts.append("one of " + ", ".join(f"`{v}`" for v in variant["enum"]))
            items = variant.get("items")
            if items and "$ref" not in items and self.constraints(items):
                parts.append(f"each: {self.constraints(items)}")
        return ", ".join(parts)

    def nested(self, schema: Schema) -> tuple[str, Schema] | None:
        """The object a property holds, directly or as array items, with the suffix that names its fields."""
        for variant in _variants(schema):
            suffix, target = (("[].", variant["items"]) if variant.get("type") == "array" and "items" in variant
                              else (".", variant))
            if "$ref" in target:
                return suffix, target
        return None

    def description(self, schema: Schema) -> str:
        text = schema.get("description")
        if text is None and (found := self.nested(schema)):
            text = self.resolve(found[1]).get("description")
        return text or ""

    def fields(self, model: Schema, prefix: str = "", seen: frozenset[str] = frozenset()) -> list[tuple[str, ...]]:
        """Every field of a request body, nested models' fields as ``outer.inner`` or ``outer[].inner``."""
        rows: list[tuple[str, ...]] = []
        required = set(model.get("required", ()))
        for name, prop in model.get("properties", {}).items():
            default = f"`{json.dumps(prop['default'])}`" if "default" in prop else ""
            rows.append((f"`{prefix}{name}`", self.type_name(prop), "yes" if name in required else "no", default,
                         self.constraints(prop), self.description(prop)))
            found = self.nested(prop)
            if found and found[1]["$ref"] not in seen:
                suffix, ref = found
                rows += self.fields(self.resolve(ref), f"{prefix}{name}{suffix}", seen | {ref["$ref"]})
        return rows


def _parameters(schemas: _Schemas, op: Schema) -> list[str]:
    params = op.get("parameters", [])
    if not params:
        return []
    rows = [(f"`{p['name']}`", p["in"], schemas.type_name(p["schema"]), "yes" if p.get("required") else "no",
             f"`{json.dumps(p['schema']['default'])}`" if "default" in p["schema"] else "",
             schemas.constraints(p["schema"]), p.get("description", "")) for p in params]
    return ["Parameters:", ""] + _table(("Name", "In", "Type", "Required", "Default", "Constraints", "Description"),
                                        rows)


def _body(schemas: _Schemas, op: Schema) -> list[str]:
    body = op.get("requestBody")
    if body is None:
        return []
    need = "required" if body.get("required") else "optional"
    media, content = min(body["content"].items())
    schema = content.get("schema", {})
    ref = _model(schema)
    if ref is None:
        return [f"Body ({need}): `{media}`, {schemas.type_name(schema)}.", ""]
    model = schemas.resolve(ref)
    lines = [f"Body ({need}): {schemas.type_name(ref)} as `{media}`."]
    if model.get("description"):
        lines.append(_cell(model["description"]))
    if model.get("additionalProperties") is False:
        lines.append("Unknown fields are refused.")
    return [" ".join(lines), ""] + _table(
        ("Field", "Type", "Required", "Default", "Constraints", "Description"), schemas.fields(model))


def _answer(schemas: _Schemas, op: Schema) -> list[str]:
    code = min(c for c in op["responses"] if c.startswith("2"))
    head = f"Answers `{code} {HTTPStatus(int(code)).phrase}`"
    content = op["responses"][code].get("content")
    if not content:
        return [f"{head} with no body.", ""]
    media, described = min(content.items())
    schema = described.get("schema", {})
    ref = _model(schema)
    if ref is None:
        return [f"{head} with `{media}`, {schemas.type_name(schema)}.", ""]
    model = schemas.resolve(ref)
    rows = [(f"`{name}`", schemas.type_name(prop), schemas.description(prop))
            for name, prop in model.get("properties", {}).items()]
    return [f"{head} with {schemas.type_name(schema)}:", ""] + _table(("Field", "Type", "Description"), rows)


def _errors(op: Schema) -> list[str]:
    codes = {int(c) for c in op["responses"] if not c.startswith("2")}
    # Not declared by FastAPI but certain: a missing or bad token is refused before anything else,
    # and a path parameter always names a resource, which may not exist (or not be the caller's).
    if op.get("security"):
        codes.add(401)
    if any(p["in"] == "path" for p in op.get("parameters", ())):
        codes.add(404)
    return [f"Errors: {', '.join(f'`{c}`' for c in sorted(codes))}.", ""] if codes else []


def _operation(schemas: _Schemas, method: str, path: str, op: Schema) -> list[str]:
    lines = [f"### `{method.upper()} {path}`", ""]
    if op.get("summary"):
        lines += [op["summary"], ""]
    if op.get("description"):
        lines += [op["description"].strip(), ""]
    lines += ["Auth: bearer token." if op.get("security") else "Auth: none; no token needed.", ""]
    return lines + _parameters(schemas, op) + _body(schemas, op) + _answer(schemas, op) + _errors(op)


def _anchor(heading: str) -> str:
    return heading.lower().replace(" ", "-")


def _websockets(sockets: Sequence[tuple[str, str]]) -> list[str]:
    """WebSocket routes, which OpenAPI does not describe: each with its endpoint's docstring."""
    lines = ["## WebSockets", ""]
    for path, doc in sockets:
        lines += [f"### `GET {path}` (WebSocket)", "", inspect.cleandoc(doc), ""]
    return lines


def render(spec: Schema, sockets: Sequence[tuple[str, str]] = ()) -> str:
    schemas = _Schemas(spec)
    by_tag: dict[str, list[tuple[str, str, Schema]]] = {}
    for path in sorted(spec["paths"]):
        ops = spec["paths"][path]
        for method in sorted(ops, key=METHODS.index):
            op = ops[method]
            by_tag.setdefault((op.get("tags") or ["other"])[0], []).append((method, path, op))
    tags = [t for t in TAGS if t in by_tag] + sorted(t for t in by_tag if t not in TAGS)
    info = spec["info"]
    lines = [f"# The {info['title']} REST API (version {info['version']})", "",
             f"<!-- Generated by `{COMMAND}`: edit the routes, not this page. -->", "",
             info.get("description", "").strip(), "", "## Contents", ""]
    lines += [f"- [{TAGS.get(t, t)}](#{_anchor(TAGS.get(t, t))})" for t in tags]
    lines += ["- [WebSockets](#websockets)", ""] if sockets else [""]
    for tag in tags:
        lines += [f"## {TAGS.get(tag, tag)}", ""]
        for method, path, op in by_tag[tag]:
            lines += _operation(schemas, method, path, op)
    if sockets:
        lines += _websockets(sockets)
    return "\n".join(lines).rstrip("\n") + "\n"


def main() -> None:
    sockets = sorted((r.path, r.endpoint.__doc__ or "") for router in routes.ALL for r in router.routes
                     if isinstance(r, APIWebSocketRoute))
    print(render(app().openapi(), sockets), end="")


if __name__ == "__main__":
    main()
