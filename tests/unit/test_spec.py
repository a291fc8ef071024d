"""The pipeline spec: valid specs load, invalid ones fail naming the offending field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from streams.errors import SpecError
from streams.spec import load_spec, load_spec_text

BASE = {
    "name": "demo",
    "input": {"topic": "events", "partitions": 2},
    "event": {
        "id_field": "id",
        "time_field": "ts",
        "fields": {
            "id": {"type": "string"},
            "ts": {"type": "timestamp"},
            "user": {"type": "string"},
            "amount": {"type": "float", "min": 0, "max": 100},
            "kind": {"type": "category", "values": ["a", "b"]},
            "tip": {"type": "float", "required": False, "default": 0.5},
        },
    },
    "entity": {"field": "user", "join_key": "user_id"},
    "features": {
        "repo": "repo",
        "refs": ["stats:spend", "stats:visits"],
        "defaults": {"stats:spend": 0.0, "stats:visits": 1.0},
    },
    "model_input": [
        {"event": "amount"},
        {"event": "kind", "encode": "one_hot"},
        {"feature": "stats:visits"},
        {"event": "tip"},
    ],
    "model": {"name": "m", "threshold": 0.7},
    "output": {"topic": "scores", "dead_letter_topic": "dlq"},
}


def load(doc: dict, tmp_path: Path = Path("/tmp")):
    return load_spec_text(yaml.safe_dump(doc), base_dir=tmp_path)


def with_change(path: str, value) -> dict:
    doc = yaml.safe_load(yaml.safe_dump(BASE))
    node = doc
    *parents, last = path.split(".")
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return doc


DELETE = object()


def test_valid_spec_loads_with_defaults_and_resolved_paths(tmp_path: Path) -> None:
    spec = load(BASE, tmp_path)
    assert spec.batch.max_size == 1024 and spec.batch.max_wait_ms == 5.0
    assert spec.model.version == "champion"
    assert spec.output_partitions == 2
    assert spec.features.repo == tmp_path / "repo"
    assert spec.input_columns() == ["amount", "kind=a", "kind=b", "stats__visits", "tip"]


def test_load_spec_reads_a_file_relative_to_it(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "spec.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(BASE))
    assert load_spec(path).features.repo == path.parent / "repo"


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("entity.field", "nope", "entity.field 'nope' is not a field"),
        ("event.time_field", "amount", "expected one of ['timestamp']"),
        ("model_input.1", {"event": "amount", "encode": "one_hot"}, "model_input[1].event"),
        ("model_input.2", {"feature": "stats:nope"}, "not in features.refs"),
        ("model_input.0", {"event": "amount", "feature": "stats:spend"}, "exactly one of"),
        (
            "features.defaults",
            {"stats:spend": 0.0},
            "no default value for features ['stats:visits']",
        ),
        ("features.refs", ["nocolon"], "not of the form 'view:feature'"),
        ("event.fields.kind", {"type": "category"}, "needs its allowed 'values'"),
        ("event.fields.amount", {"type": "float", "min": 5, "max": 1}, "min 5.0 is above max"),
        (
            "event.fields.tip",
            {"type": "float", "required": False},
            "is optional: give it a 'default'",
        ),
        ("batch", {"max_size": 0}, "batch.max_size"),
        ("model.threshold", 1.5, "model.threshold"),
        ("output", DELETE, "output: Field required"),
        ("surprise", 1, "surprise: Extra inputs are not permitted"),
    ],
)
def test_invalid_spec_names_the_field(path: str, value, expected: str) -> None:
    with pytest.raises(SpecError) as caught:
        load(with_change(path, value))
    assert expected in str(caught.value)


def test_unreadable_or_malformed_files_are_spec_errors(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read pipeline spec"):
        load_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)
    bad.write_text("- a list\n")
    with pytest.raises(SpecError, match="a YAML mapping"):
        load_spec(bad)
