"""The seed's vocabulary, byte for byte, with its two defects fixed."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import studyledger.schema
from studyledger.schema import (
    Observation,
    ObservationLevel,
    ProvenanceMetadata,
    RunBudget,
    RunStatus,
    SeedPolicy,
    ValidationError,
    from_canonical,
    hash_identifier,
    load_callable,
    stable_json_dumps,
    to_jsonable,
)
from studyledger.events import canonical_body, event_id_for

from .conftest import SHARED

VECTORS_PATH = SHARED / "seed" / "vectors.json"


@pytest.fixture(scope="module")
def vectors() -> dict:
    return json.loads(VECTORS_PATH.read_text())


# The vectors file records inputs as Python reprs; these are the same payloads as values.
PAYLOADS = [
    ("run", {"study_id": "s1", "condition_id": "c1", "replicate": 1}),
    ("evt", {"run_id": "run-1", "index": 0, "event_type": "assistant_output"}),
    ("evt", {"text": "héllo wörld ✓ 日本", "n": 1.5, "b": True, "none": None}),
    ("cond", {"z": 1, "a": [3, 2, 1], "m": {"y": 2, "x": 1}}),
    ("obs", {"big": 100000000000000000000, "neg": -0.0, "f": 1e-07, "s": 'line\nbreak\t"q"'}),
    ("st", {"status": RunStatus.SUCCESS, "level": ObservationLevel.TOOL_CALL, "p": Path("a/b.txt")}),
    ("x", {1: "int key", "t": (1, "two")}),
]


def test_hash_identifier_matches_vectors(vectors: dict) -> None:
    assert len(vectors["hash_identifier"]) == len(PAYLOADS)
    for (prefix, payload), expected in zip(PAYLOADS, vectors["hash_identifier"], strict=True):
        assert expected["prefix"] == prefix
        assert stable_json_dumps(payload) == expected["stable_json"]
        assert hash_identifier(prefix, payload) == expected["id12"]
        assert hash_identifier(prefix, payload, length=32) == expected["id32"]


def test_derive_seed_matches_vectors(vectors: dict) -> None:
    for case in vectors["derive_seed"]:
        policy = SeedPolicy(**case["policy"])
        seed = policy.derive_seed(case["study_id"], case["condition_id"], case["replicate"], salt=case["salt"])
        assert seed == case["seed"]


def test_observation_to_row_matches_vector(vectors: dict) -> None:
    observation = Observation(
        timestamp="2026-01-01T00:00:00+00:00", record_id="evt-1", text="hi", session_id="run-1",
        actor_id="agent", event_type="assistant_output", meta_json={"b": 2, "a": 1},
        level=ObservationLevel.TOOL_CALL, run_id="run-1", tool_name="calc",
    )
    assert observation.to_row() == vectors["observation_to_row"]["row"]


def test_the_seeds_names_are_in_the_schema_module() -> None:
    for name in ("SCHEMA_VERSION", "ValidationError", "ConstraintSeverity", "RunStatus", "ObservationLevel",
                 "SeedPolicy", "RunBudget", "ProvenanceMetadata", "Observation", "utc_now_iso",
                 "resolve_git_sha", "stable_json_dumps", "to_jsonable", "hash_identifier", "load_callable"):
        assert hasattr(studyledger.schema, name), name
    assert studyledger.schema.SCHEMA_VERSION == "0.1.0"
    assert issubclass(ValidationError, ValueError)


SET_SCRIPT = "import studyledger.schema as s; print(s.stable_json_dumps({'s': {'beta', 'alpha', 'gamma', 3, 'delta'}, 'f': frozenset({'x', 'y'})}))"


def test_set_serialises_the_same_in_every_process() -> None:
    outputs = set()
    for hash_seed in ("0", "1", "2", "12345", "random"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        result = subprocess.run([sys.executable, "-c", SET_SCRIPT], env=env, capture_output=True, text=True, check=True)
        outputs.add(result.stdout.strip())
    assert len(outputs) == 1
    # Sorted by each item's canonical JSON text, so '"alpha"' sorts before '3'.
    assert outputs.pop() == '{"f":["x","y"],"s":["alpha","beta","delta","gamma",3]}'


def test_non_finite_floats_get_a_strict_json_form() -> None:
    text = stable_json_dumps({"a": math.nan, "b": math.inf, "c": -math.inf, "d": None, "e": "NaN"})
    assert text == ('{"a":{"$float":"NaN"},"b":{"$float":"Infinity"},"c":{"$float":"-Infinity"},'
                    '"d":null,"e":"NaN"}')
    json.loads(text, parse_constant=lambda token: pytest.fail(f"non-JSON token {token}"))
    back = from_canonical(json.loads(text))
    assert math.isnan(back["a"]) and back["b"] == math.inf and back["c"] == -math.inf
    assert back["d"] is None and back["e"] == "NaN"
    # NaN, null and the string "NaN" give three different ids.
    ids = {hash_identifier("x", {"v": value}) for value in (math.nan, None, "NaN")}
    assert len(ids) == 3


def test_to_jsonable_handles_dataclasses_enums_paths_and_unknowns() -> None:
    assert to_jsonable(RunBudget(replicates=2)) == {"replicates": 2, "max_runs": None, "parallelism": 1, "fail_fast": False}
    assert to_jsonable(Path("a/b")) == "a/b"
    assert to_jsonable(RunStatus.FAILED) == "failed"
    assert to_jsonable(object.__new__(type("Odd", (), {"__str__": lambda self: "odd"}))) == "odd"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_fast_canonical_body_equals_the_seed_compatible_form(value: object) -> None:
    """The hot path's encoder and stable_json_dumps agree on every JSON value."""
    assert canonical_body(value) == stable_json_dumps(value)
    # And a canonical text reads back to itself: bodies survive a round trip unchanged.
    assert canonical_body(json.loads(canonical_body(value))) == canonical_body(value)


@given(st.dictionaries(st.text(max_size=8), json_values, max_size=5), st.sampled_from(["a", "observation_recorded"]))
def test_event_id_is_hash_identifier_of_kind_and_body(body: dict, kind: str) -> None:
    assert event_id_for(kind, canonical_body(body)) == hash_identifier("evt", {"kind": kind, "body": body}, length=32)


def test_run_budget_validation() -> None:
    for bad in ({"replicates": 0}, {"parallelism": 0}, {"max_runs": 0}):
        with pytest.raises(ValidationError):
            RunBudget(**bad)


def test_provenance_capture_and_load_callable(tmp_path: Path) -> None:
    provenance = ProvenanceMetadata.capture(["click", "surely-not-a-package-xyz"], cwd=tmp_path)
    assert provenance.package_versions["surely-not-a-package-xyz"] == "not-installed"
    assert provenance.package_versions["click"][0].isdigit()
    assert provenance.git_sha is None  # tmp_path is not a git checkout
    assert provenance.python_version == sys.version.split()[0]
    assert load_callable("json:dumps") is json.dumps
    with pytest.raises(ValidationError):
        load_callable("json.dumps")
    with pytest.raises(ValidationError):
        load_callable("math:pi")
