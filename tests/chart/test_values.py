"""values.yaml and values.schema.json: every key documented with `# --`, typed by the schema, and the schema bites."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.chart.conftest import CHART_DIR, helm

VALUES_TEXT = (CHART_DIR / "values.yaml").read_text()
SCHEMA = json.loads((CHART_DIR / "values.schema.json").read_text())


def _key_lines(text: str) -> list[tuple[int, str]]:
    """(line index, key) of every mapping key line in values.yaml (list items excluded)."""
    keys = []
    for i, line in enumerate(text.splitlines()):
        match = re.match(r"^(\s*)([A-Za-z][\w.-]*):(\s|$)", line)
        if match:
            keys.append((i, match.group(2)))
    return keys


def _leaf_key_paths(values: Any, schema: dict[str, Any], prefix: str = "") -> list[str]:
    """Paths of the values keys the schema types individually (free-form objects are one leaf)."""
    paths = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        sub = schema.get("properties", {}).get(key)
        paths.append(path)
        if isinstance(value, dict) and sub is not None and "properties" in sub:
            paths += _leaf_key_paths(value, sub, path + ".")
    return paths


def _documented_keys(text: str) -> set[str]:
    """Keys whose line is preceded by a `# --` comment (possibly after other comment lines) or that open a block."""
    lines = text.splitlines()
    documented = set()
    stack: list[tuple[int, str]] = []
    for i, key in _key_lines(text):
        indent = len(lines[i]) - len(lines[i].lstrip())
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([k for _, k in stack] + [key])
        j = i - 1
        while j >= 0 and lines[j].strip().startswith("#") and not lines[j].strip().startswith("# --"):
            j -= 1
        is_block = lines[i].rstrip().endswith(":")
        if (j >= 0 and lines[j].strip().startswith("# --")) or is_block:
            documented.add(path)
        stack.append((indent, key))
    return documented


def test_every_typed_value_key_has_a_doc_comment(chart: Any) -> None:
    documented = _documented_keys(VALUES_TEXT)
    missing = [p for p in _leaf_key_paths(chart.values, SCHEMA) if p not in documented]
    assert not missing, f"values without a `# --` comment: {missing}"


def test_every_leaf_value_has_its_own_doc_comment() -> None:
    lines = VALUES_TEXT.splitlines()
    undocumented = []
    for i, key in _key_lines(VALUES_TEXT):
        if lines[i].rstrip().endswith(":") and i + 1 < len(lines) and lines[i + 1].strip():
            continue  # a block: its children carry the comments
        if not lines[i - 1].strip().startswith("# --"):
            undocumented.append(key)
    # keys inside free-form objects (podSecurityContext, resources, annotations) are examples, not options
    free_form = {"runAsNonRoot", "runAsUser", "runAsGroup", "fsGroup", "type", "allowPrivilegeEscalation",
                 "readOnlyRootFilesystem", "drop", "cpu", "memory", "nginx.ingress.kubernetes.io/upstream-hash-by"}  # fmt: skip
    assert not [k for k in undocumented if k not in free_form]


def _schema_paths(schema: dict[str, Any], prefix: str = "") -> set[str]:
    paths = set()
    for key, sub in schema.get("properties", {}).items():
        paths.add(prefix + key)
        paths |= _schema_paths(sub, prefix + key + ".")
    return paths


def test_schema_and_values_name_the_same_keys(chart: Any) -> None:
    assert set(_leaf_key_paths(chart.values, SCHEMA)) == _schema_paths(SCHEMA)


def test_schema_closes_every_typed_object() -> None:
    def walk(node: dict[str, Any], path: str) -> None:
        if "properties" in node:
            assert node.get("additionalProperties") is False, path
            for key, sub in node["properties"].items():
                walk(sub, f"{path}.{key}")

    walk(SCHEMA, "")


def test_schema_accepts_the_defaults(chart: Any) -> None:
    chart.validate_schema({})


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"api": {"backend": "gpu"}}, "/api/backend"),
        ({"api": {"replicaCount": 0}}, "/api/replicaCount"),
        ({"vllm": {"gpuMemoryUtilization": 1.5}}, "/vllm/gpuMemoryUtilization"),
        ({"vllm": {"model": {"classifierTokens": ["▁No", "▁Yes"]}}}, "/vllm/model"),  # read from binllm.json
        ({"vllm": {"maxNumBatchedTokens": "lots"}}, "/vllm/maxNumBatchedTokens"),
        ({"redis": {"persistence": {"size": "lots"}}}, "/redis/persistence/size"),
        ({"api": {"hpa": {"enabled": True}}}, "/api"),
    ],
)
def test_schema_refuses_bad_values_naming_the_key(chart: Any, values: dict[str, Any], where: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=re.escape(where)):
        chart.validate_schema(values)
