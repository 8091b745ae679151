"""The spec: JSON round trip, stable ids, and validation errors that name the field."""

import copy
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from search_spaces import ArchSpec, SpecError, load, loads, references, resolve_arch


@pytest.fixture
def large_dict():
    return json.loads(references.get("mobilenetv3_large").to_json())


def test_id_ignores_name_but_not_architecture(large_dict):
    a = loads(json.dumps(large_dict))
    b = a.replace(name="renamed")
    assert a.arch_id == b.arch_id
    assert a.with_block(3, expand_channels=64).arch_id != a.arch_id


def test_id_is_independent_of_key_order_and_whitespace(large_dict):
    a = loads(json.dumps(large_dict))
    shuffled = json.dumps(dict(reversed(list(large_dict.items()))), indent=7)
    assert loads(shuffled).arch_id == a.arch_id


def test_defaults_fill_optional_fields():
    spec = loads('{"stem": {"out_channels": 16}, "blocks": [{"kind": "mbconv", "in_channels": 16,'
                 ' "expand_channels": 64, "out_channels": 24, "stride": 2}], "head": {"conv_channels": 0}}')
    assert spec.resolution == 224 and spec.num_classes == 1000
    assert spec.blocks[0].kernel_size == 3 and not spec.blocks[0].residual


def _mutate(d, path, value):
    d = copy.deepcopy(d)
    target = d
    for p in path[:-1]:
        target = target[p]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return d


BAD = [
    (("blocks", 2, "activation"), "gelu", "blocks[2].activation", "relu, relu6, hswish, swish"),
    (("blocks", 2, "kernel_size"), 4, "blocks[2].kernel_size", "1, 3, 5, 7, 9, 11"),
    (("blocks", 2, "stride"), 3, "blocks[2].stride", "1, 2"),
    (("blocks", 1, "residual"), True, "blocks[1].residual", "stride 1"),
    (("blocks", 2, "out_channels"), 0, "blocks[2].out_channels", "1..4096"),
    (("blocks", 2, "out_channels"), 5000, "blocks[2].out_channels", "1..4096"),
    (("blocks", 2, "in_channels"), 16, "blocks[2].in_channels", "previous layer"),
    (("blocks", 0, "expand_channels"), 32, "blocks[0].expand_channels", "dsconv"),
    (("blocks", 2, "se"), "yes", "blocks[2].se", "true or false"),
    (("blocks", 2, "kind"), "attention", "blocks[2].kind", "mbconv, dsconv, conv"),
    (("blocks", 2, "expand_channels"), 72.5, "blocks[2].expand_channels", "integer"),
    (("blocks", 2, "expand_channels"), True, "blocks[2].expand_channels", "integer"),
    (("blocks", 2, "colour"), "red", "blocks[2]", "unknown field"),
    (("blocks", 2, "out_channels"), KeyError, "blocks[2]", "missing required field"),
    (("resolution",), 4096, "resolution", "8..1024"),
    (("num_classes",), 1, "num_classes", "2..100000"),
    (("head", "dropout"), 1.0, "head.dropout", "[0.0, 1.0)"),
    (("head", "dropout"), float("nan"), "head.dropout", "number"),
    (("stem", "activation"), None, "stem.activation", "relu"),
    (("se", "gate"), "tanh", "se.gate", "hsigmoid, sigmoid"),
    (("schema_version",), 99, "schema_version", "schema 1"),
    (("blocks",), [], "blocks", "1..64"),
    (("blocks",), "none", "blocks", "array"),
]


@pytest.mark.parametrize("path,value,field,hint", BAD, ids=[b[2] + "=" + repr(b[1])[:12] for b in BAD])
def test_bad_fields_name_the_field_and_the_allowed_values(large_dict, path, value, field, hint):
    bad = _mutate(large_dict, path, value)
    with pytest.raises(SpecError) as err:
        loads(json.dumps(bad))
    assert err.value.path == field
    assert hint in str(err.value)
    assert "\n" not in str(err.value)


def test_too_many_blocks_rejected(large_dict):
    block = dict(large_dict["blocks"][2])  # 24 -> 24, residual
    d = _mutate(large_dict, ("blocks",), large_dict["blocks"][:3] + [block] * 70)
    with pytest.raises(SpecError, match="1..64"):
        loads(json.dumps(d))


@pytest.mark.parametrize(
    "text,hint",
    [
        ("{", "malformed JSON"),
        ('{"stem": ', "malformed JSON"),
        ("[" * 100_000 + "]" * 100_000, "nested deeper"),
        ("[]", "expected an object"),
        ("null", "expected an object"),
        (b"\xff\xfe", "not UTF-8"),
        ("x" * 2_000_000, "at most"),
    ],
)
def test_malformed_documents_give_one_line_errors(text, hint):
    with pytest.raises(SpecError) as err:
        loads(text)
    assert hint in str(err.value)


def test_load_reports_the_file(tmp_path):
    with pytest.raises(SpecError, match="no such file"):
        load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"stem": {"out_channels": 16}}')
    with pytest.raises(SpecError, match=r"bad.json.*missing required field"):
        load(bad)
    with pytest.raises(SpecError, match="is a directory"):
        load(tmp_path)


def test_save_is_atomic_and_round_trips(tmp_path):
    spec = references.get("mobilenetv3_small")
    path = tmp_path / "sub" / "found.json"
    spec.save(path)
    assert load(path) == spec
    assert [p.name for p in path.parent.iterdir()] == ["found.json"]  # no temp files left


def test_resolve_arch_by_name_and_path(tmp_path):
    assert resolve_arch("mnasnet_a1").name == "mnasnet_a1"
    p = tmp_path / "a.json"
    references.get("mnasnet_a1").save(p)
    assert resolve_arch(str(p)) == references.get("mnasnet_a1")
    with pytest.raises(SpecError, match="neither a registered architecture"):
        resolve_arch("mobilenetv4")


def test_specs_built_in_code_are_validated_too():
    spec = references.get("mobilenetv3_large")
    with pytest.raises(SpecError, match=r"blocks\[0\].residual"):
        spec.with_block(0, out_channels=24, residual=True)  # residual with in != out


# A small fuzz: any JSON value either parses to a valid spec or gives a clean SpecError.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 5000) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fuzzed_fields_never_crash(data):
    # Replace a random field anywhere in a valid spec with a random JSON value.
    d = json.loads(references.get("mobilenetv3_large").to_json())
    target = d
    for _ in range(data.draw(st.integers(0, 2))):
        keys = sorted(target) if isinstance(target, dict) else range(len(target))
        inner = [k for k in keys if isinstance(target[k], (dict, list)) and target[k]]
        if not inner:
            break
        target = target[data.draw(st.sampled_from(inner))]
    keys = sorted(target) if isinstance(target, dict) else list(range(len(target)))
    target[data.draw(st.sampled_from(keys))] = data.draw(json_values)
    try:
        spec = loads(json.dumps(d))
    except SpecError as e:
        assert "\n" not in str(e)
    else:
        assert isinstance(spec, ArchSpec)
