"""Property-based fuzzing of the spec loader (``ArchSpec.from_json`` / ``from_dict`` /
``search_spaces.load``). Every input is either a valid spec or a clean ``SpecError`` (one line, naming
a field), fast, with bounded memory. The default run executes a few thousand cases; the slow variant
(``-m slow``) over ten thousand. ``FUZZ_CASES`` counts what ran (printed in the terminal summary)."""

from __future__ import annotations

import collections
import json
import time
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from search_spaces import count, load, references, walk
from search_spaces.spec import MAX_JSON_DEPTH, MAX_SPEC_BYTES, ArchSpec, SpecError

FUZZ_CASES: collections.Counter = collections.Counter()
MAX_SECONDS_PER_CASE = 5.0  # "none hangs": each case is milliseconds; this only catches a runaway

REFERENCE_DICTS = [references.get(n).to_dict() for n in ("mobilenetv3_small", "mnasnet_a1", "mobilenetv2_035")]
FIELD_NAMES = sorted({k for d in REFERENCE_DICTS for k in d}
                     | {k for d in REFERENCE_DICTS for k in d["stem"]}
                     | {k for d in REFERENCE_DICTS for k in d["blocks"][0]}
                     | {k for d in REFERENCE_DICTS for k in d["head"]}
                     | {k for d in REFERENCE_DICTS for k in d["se"]})

scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.integers(-3, 4100)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
           | st.sampled_from(["mbconv", "dsconv", "conv", "relu", "hswish", "expand", "hsigmoid", "sigmoid"]))
keys = st.sampled_from(FIELD_NAMES) | st.text(max_size=8)
json_values = st.recursive(scalars, lambda c: st.lists(c, max_size=5) | st.dictionaries(keys, c, max_size=6),
                           max_leaves=30)
# from_dict also gets Python objects that JSON cannot hold: keys of any type, tuples, sets, bytes, huge ints
py_scalars = scalars | st.binary(max_size=4) | st.integers(10**40, 10**40 + 5).map(lambda n: n**120)
py_keys = keys | st.integers() | st.none() | st.booleans() | st.floats(allow_nan=False) | st.tuples(st.integers())
py_values = st.recursive(py_scalars, lambda c: st.lists(c, max_size=4) | st.tuples(c, c)
                         | st.frozensets(st.integers(), max_size=3) | st.dictionaries(py_keys, c, max_size=5),
                         max_leaves=25)
junk = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True, allow_infinity=True)
        | st.text(max_size=5) | st.lists(st.integers(), max_size=2)
        | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@st.composite
def near_valid_specs(draw):
    """Spec-shaped documents: mostly valid values and consistent channel chains, with rare junk, missing
    fields and extra fields, so that the cross-field rules and valid specs get exercised too."""

    def pick(valid):
        return draw(junk) if draw(st.integers(0, 79)) == 0 else draw(valid)

    def obj(fields: dict, required: set) -> dict:
        out = {k: v for k, v in fields.items() if k in required or draw(st.integers(0, 3))}
        if draw(st.integers(0, 40)) == 0:
            out.pop(draw(st.sampled_from(sorted(out))), None) if out else None
        if draw(st.integers(0, 40)) == 0:
            out[draw(keys)] = draw(junk)
        return out

    acts = st.sampled_from(["relu", "relu6", "hswish", "swish"])
    stem_out = pick(st.integers(1, 64))
    blocks, prev = [], stem_out
    for _ in range(draw(st.integers(1, 8))):
        kind = pick(st.sampled_from(["mbconv", "dsconv", "conv"]))
        cin = prev if draw(st.integers(0, 20)) else pick(st.integers(1, 64))
        cout = pick(st.integers(1, 64))
        rule = {"mbconv": None, "dsconv": cin, "conv": cout}
        exp = rule.get(kind) if isinstance(kind, str) and rule.get(kind) is not None else pick(st.integers(1, 256))
        if draw(st.integers(0, 20)) == 0:
            exp = pick(st.integers(1, 256))
        stride = pick(st.sampled_from([1, 2]))
        blocks.append(obj({"kind": kind, "in_channels": cin, "expand_channels": exp, "out_channels": cout,
                           "kernel_size": pick(st.sampled_from([1, 3, 5, 7, 9, 11])), "stride": stride,
                           "se": pick(st.booleans()), "activation": pick(acts),
                           "residual": (pick(st.booleans()) if stride == 1 and cin == cout
                                        else draw(st.integers(0, 10)) == 0)},
                          {"kind", "in_channels", "expand_channels", "out_channels"}))
        prev = cout
    return obj({
        "schema_version": pick(st.just(1)), "name": pick(st.text(max_size=20)),
        "resolution": pick(st.integers(8, 256)), "in_channels": pick(st.integers(1, 4)),
        "num_classes": pick(st.integers(2, 1000)),
        "se": obj({"ratio": pick(st.floats(0, 1)), "base": pick(st.sampled_from(["expand", "input"])),
                   "divisor": pick(st.integers(1, 64)), "gate": pick(st.sampled_from(["hsigmoid", "sigmoid"]))}, set()),
        "stem": obj({"out_channels": stem_out, "kernel_size": pick(st.sampled_from([1, 3, 5])),
                     "stride": pick(st.sampled_from([1, 2])), "activation": pick(acts)}, {"out_channels"}),
        "blocks": blocks,
        "head": obj({"conv_channels": pick(st.integers(0, 1024)), "hidden_channels": pick(st.integers(0, 1280)),
                     "activation": pick(acts), "dropout": pick(st.floats(0, 0.99))}, {"conv_channels"}),
    }, {"stem", "blocks", "head"})


@st.composite
def mutated_references(draw):
    """A reference spec with 1-3 random edits anywhere: replace, delete or add a field or a block."""
    d = json.loads(json.dumps(draw(st.sampled_from(REFERENCE_DICTS))))
    for _ in range(draw(st.integers(1, 3))):
        target = d
        for _ in range(draw(st.integers(0, 2))):
            inner = [k for k in (target if isinstance(target, dict) else range(len(target)))
                     if isinstance(target[k], (dict, list)) and target[k]]
            if not inner:
                break
            target = target[draw(st.sampled_from(inner))]
        slots = list(target) if isinstance(target, dict) else list(range(len(target)))
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "add" or not slots:
            if isinstance(target, dict):
                target[draw(keys)] = draw(json_values)
            else:
                target.insert(draw(st.integers(0, len(target))), draw(json_values))
        elif action == "delete":
            del target[draw(st.sampled_from(slots))]
        else:
            target[draw(st.sampled_from(slots))] = draw(json_values)
    return d


def _valid_spec_checks(spec: ArchSpec) -> None:
    assert isinstance(spec, ArchSpec)
    again = ArchSpec.from_json(spec.to_json())
    assert again == spec and again.arch_id == spec.arch_id
    c = count(spec)
    assert c.params > 0 and c.madds > 0 and len(walk(spec)) >= len(spec.blocks) + 2


def _clean(err: SpecError) -> None:
    text = str(err)
    assert text and "\n" not in text and len(text) < 2000, text
    assert "Traceback" not in text


def check_dict(d) -> None:
    t0 = time.perf_counter()
    try:
        spec = ArchSpec.from_dict(d)
    except SpecError as e:
        _clean(e)
    else:
        _valid_spec_checks(spec)
    assert time.perf_counter() - t0 < MAX_SECONDS_PER_CASE


def check_text(text) -> None:
    t0 = time.perf_counter()
    try:
        spec = ArchSpec.from_json(text)
    except SpecError as e:
        _clean(e)
    else:
        _valid_spec_checks(spec)
    assert time.perf_counter() - t0 < MAX_SECONDS_PER_CASE


def check_json_value(d) -> None:
    """The same document as a dict and as JSON text gives the same outcome."""
    outcomes = []
    for load_fn, arg in ((ArchSpec.from_dict, d), (ArchSpec.from_json, json.dumps(d))):
        try:
            outcomes.append(load_fn(arg))
        except SpecError as e:
            _clean(e)
            outcomes.append(str(e))
    assert outcomes[0] == outcomes[1]
    if isinstance(outcomes[0], ArchSpec):
        _valid_spec_checks(outcomes[0])


@st.composite
def texts(draw):
    """JSON-ish text: a valid spec cut short or with bytes flipped, bracket runs, random unicode."""
    base = json.dumps(draw(st.sampled_from(REFERENCE_DICTS)), indent=draw(st.sampled_from([None, 1])))
    kind = draw(st.sampled_from(["cut", "flip", "splice", "brackets", "random", "numbers"]))
    if kind == "cut":
        return base[: draw(st.integers(0, len(base)))]
    if kind == "flip":
        chars = list(base)
        for _ in range(draw(st.integers(1, 4))):
            chars[draw(st.integers(0, len(chars) - 1))] = draw(st.characters())
        return "".join(chars)
    if kind == "splice":
        i = draw(st.integers(0, len(base)))
        return base[:i] + draw(st.text(max_size=20)) + base[i:]
    if kind == "brackets":
        n = draw(st.integers(0, 3 * MAX_JSON_DEPTH))
        inner = draw(st.sampled_from(["", "1", '"x"', base]))
        return draw(st.sampled_from(["[", "{\"a\":"])) * n + inner + "]" * draw(st.integers(0, n))
    if kind == "numbers":
        number = draw(st.sampled_from(["1e999", "-1e999", "NaN", "Infinity", "9" * 5000, "1.5", "-0", "0x10"]))
        field = draw(st.sampled_from(["resolution", "num_classes", "in_channels", "name"]))
        return base.replace(f'"{field}": ', f'"{field}": {number}, "_x": ', 1)
    return draw(st.text(max_size=200))


def check_bytes(raw: bytes) -> None:
    t0 = time.perf_counter()
    try:
        spec = ArchSpec.from_json(raw)
    except SpecError as e:
        _clean(e)
    else:
        _valid_spec_checks(spec)
    assert time.perf_counter() - t0 < MAX_SECONDS_PER_CASE


byte_inputs = (st.binary(max_size=300)
               | st.sampled_from(REFERENCE_DICTS).map(lambda d: json.dumps(d).encode()).flatmap(
                   lambda b: st.tuples(st.just(b), st.integers(0, len(b)), st.binary(max_size=3)).map(
                       lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + len(t[2]):])))

FUZZERS = {
    # name: (strategy, check, default cases, slow cases)
    "json-documents": (json_values, check_json_value, 500, 2500),
    "near-valid-specs": (near_valid_specs(), check_dict, 700, 3500),
    "mutated-references": (mutated_references(), check_json_value, 400, 2000),
    "python-objects": (py_values, check_dict, 300, 1000),
    "texts": (texts(), check_text, 400, 2000),
    "bytes": (byte_inputs, check_bytes, 200, 1000),
}


def _run_fuzzer(name: str, n: int) -> None:
    strategy, check, _, _ = FUZZERS[name]
    ran = collections.Counter()

    @settings(max_examples=n, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def fuzz(value):
        ran[name] += 1
        check(value)

    fuzz()
    FUZZ_CASES.update(ran)
    assert ran[name] >= 0.9 * n, f"only {ran[name]} of {n} cases ran"


@pytest.mark.parametrize("name", sorted(FUZZERS))
def test_fuzz_spec_loader(name):
    _run_fuzzer(name, FUZZERS[name][2])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FUZZERS))
def test_fuzz_spec_loader_long(name):
    _run_fuzzer(name, FUZZERS[name][3])


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=2000) | texts().map(str.encode))
def test_fuzz_spec_files(tmp_path_factory, raw):
    """The file loader: valid, or a SpecError that names the file."""
    FUZZ_CASES["files"] += 1
    path = tmp_path_factory.mktemp("fuzz", numbered=True) / "spec.json"
    path.write_bytes(raw)
    try:
        spec = load(path)
    except SpecError as e:
        _clean(e)
        assert str(path) in str(e)
    else:
        _valid_spec_checks(spec)


WORST_CASES = {
    "max-size string": lambda: '{"name": "' + "x" * (MAX_SPEC_BYTES - 20) + '"}',
    "max-size flat array": lambda: '{"blocks": [' + ",".join(["0"] * (MAX_SPEC_BYTES // 2 - 20)) + "]}",
    "max-size array of empty arrays": lambda: "[" + ",".join(["[]"] * (MAX_SPEC_BYTES // 3 - 2)) + "]",
    "max-size allowed nesting": lambda: ("[" * MAX_JSON_DEPTH + "0," * 40_000 + "0" + "]" * MAX_JSON_DEPTH) * 5,
    "bracket bomb": lambda: "[" * (MAX_SPEC_BYTES // 2),
    "many keys": lambda: "{" + ",".join(f'"k{i}":0' for i in range(MAX_SPEC_BYTES // 12)) + "}",
    "huge numbers": lambda: '{"resolution": ' + "9" * (MAX_SPEC_BYTES - 20) + "}",
}


@pytest.mark.parametrize("name", sorted(WORST_CASES))
def test_worst_case_inputs_are_fast_and_bounded(name):
    """Inputs at the size limit: a clean error within seconds, peak memory a small multiple of the input."""
    text = WORST_CASES[name]()
    assert len(text) <= MAX_SPEC_BYTES
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(SpecError) as err:
            ArchSpec.from_json(text)
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    _clean(err.value)
    assert elapsed < 10, elapsed
    assert peak < 64 * 1024**2, f"{peak / 1e6:.0f} MB for a {len(text) / 1e6:.1f} MB input"
