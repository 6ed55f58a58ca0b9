"""The simulators' generated OpenAPI matches the contracts: operations, codes, required fields, enums."""

from __future__ import annotations

from functools import reduce
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI

from patient_docs.settings import Settings
from patient_docs.simulators.docexchange import create_docexchange_app
from patient_docs.simulators.tasktracker import create_tasktracker_app

REPO = Path(__file__).resolve().parents[2]
CONTRACTS = {"project": REPO / "patient_docs" / "api", "shared": REPO.parent / "shared" / "contracts"}
APPS = {"documentexchange": create_docexchange_app, "tasktracker": create_tasktracker_app}
METHODS = {"get", "post", "put", "patch", "delete"}


def _resolve(spec: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        node = reduce(lambda d, k: d[k], node["$ref"].removeprefix("#/").split("/"), spec)
    return node


def _shape(spec: dict[str, Any], schema: Any, at: str = "$") -> dict[str, Any]:
    """Required fields, enums and string lengths, keyed by where they sit in the schema."""
    schema = _resolve(spec, schema) or {}
    out: dict[str, Any] = {}
    for variant in schema.get("anyOf", []) + schema.get("oneOf", []):
        if _resolve(spec, variant).get("type") != "null":
            out |= _shape(spec, variant, at)
    if "enum" in schema:
        out[f"{at} enum"] = sorted(map(str, schema["enum"]))
    for limit in ("minLength", "maxLength"):
        if limit in schema:
            out[f"{at} {limit}"] = schema[limit]
    if "properties" in schema:
        out[f"{at} required"] = sorted(schema.get("required", []))
        for name, sub in schema["properties"].items():
            out |= _shape(spec, sub, f"{at}.{name}")
    if "items" in schema:
        out |= _shape(spec, schema["items"], f"{at}[]")
    return out


def _content(spec: dict[str, Any], content: dict[str, Any]) -> dict[str, Any]:
    return {media: _shape(spec, body.get("schema")) for media, body in (content or {}).items()}


def normalize(spec: dict[str, Any]) -> dict[str, Any]:
    """What must agree between a contract and a simulator, per (path, method)."""
    ops: dict[str, Any] = {}
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method not in METHODS:
                continue
            params = [_resolve(spec, p) for p in op.get("parameters", [])]
            body = _resolve(spec, op.get("requestBody")) or {}
            responses = {code: _resolve(spec, r) for code, r in op["responses"].items()}
            ops[f"{method.upper()} {path}"] = {
                "operationId": op.get("operationId"),
                "parameters": sorted((p["name"], p["in"], bool(p.get("required"))) for p in params),
                "request": {"required": bool(body.get("required")), "content": _content(spec, body.get("content"))},
                "responses": sorted(responses),
                "success content": {c: _content(spec, r.get("content")) for c, r in responses.items() if c < "300"},
                "headers": {c: sorted(r.get("headers", {})) for c, r in responses.items()},
            }
    return ops


def _contract(folder: Path, name: str) -> dict[str, Any]:
    path = folder / f"{name}.openapi.yaml"
    if not path.exists():
        pytest.skip(f"{path} does not exist")
    return yaml.safe_load(path.read_text())


def _generated(name: str) -> dict[str, Any]:
    app: FastAPI = APPS[name](Settings())
    return app.openapi()


@pytest.mark.parametrize("where", list(CONTRACTS))
@pytest.mark.parametrize("name", list(APPS))
def test_generated_openapi_matches_contract(where: str, name: str) -> None:
    if where == "shared" and not CONTRACTS["shared"].is_dir():
        pytest.skip(f"{CONTRACTS['shared']} does not exist")
    contract, generated = normalize(_contract(CONTRACTS[where], name)), normalize(_generated(name))
    assert sorted(generated) == sorted(contract)
    for operation, expected in contract.items():
        assert generated[operation] == expected, operation


@pytest.mark.parametrize("name", list(APPS))
def test_sim_routes_are_not_in_the_schema(name: str) -> None:
    assert not [p for p in _generated(name)["paths"] if p.startswith("/_sim")]


def test_normalize_sees_differences() -> None:
    contract = _contract(CONTRACTS["project"], "tasktracker")
    broken = yaml.safe_load(yaml.safe_dump(contract))
    broken["components"]["schemas"]["Task"]["properties"]["status"]["enum"].append("DONE")
    assert normalize(broken) != normalize(contract)
