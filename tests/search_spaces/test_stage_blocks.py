"""Search spaces decode exactly as they did before their stages were expanded by ``scaling.stage_blocks``.

``decoded_arch_ids.json`` was recorded with the code *before* that refactoring (when
``search_spaces/spaces.py`` expanded its stages with its own loop): for each registered space (and a
few spaces with other inputs and a non-dyadic base width, where rounding order matters), the arch_id
of 200 architectures sampled with a fixed seed, of the seed architectures, and a digest of every
layer key the space can produce. Any change to widths, expansion, strides or residuals changes them.
Regenerate only on purpose (the ids name cached weights, table entries and run directories):
``.venv/bin/python -m tests.search_spaces.test_stage_blocks``.
"""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from search_spaces.spaces import SPACE_NAMES, FactorizedSpace, get_space

FIXTURE = Path(__file__).with_name("decoded_arch_ids.json")
N_SAMPLES = 200
SEED = 20261201


def _spaces() -> dict[str, FactorizedSpace]:
    spaces = {name: get_space(name) for name in SPACE_NAMES}
    spaces["mobilenetv3@32x1x10"] = get_space("mobilenetv3", resolution=32, in_channels=1, num_classes=10)
    spaces["mnasnet@w0.35"] = FactorizedSpace("mnasnet_035", variant="mnasnet", base_width=0.35)
    spaces["mobilenetv3@w1.3"] = FactorizedSpace("mobilenetv3_130", variant="mobilenetv3", base_width=1.3)
    return spaces


def _record(space: FactorizedSpace) -> dict:
    rng = np.random.default_rng(SEED)
    keys = sorted(json.dumps(k.to_dict(), sort_keys=True) for k in space.layer_keys())
    return {
        "samples": [space.decode(space.sample(rng)).arch_id for _ in range(N_SAMPLES)],
        "seeds": {name: space.decode(params).arch_id for name, params in sorted(space.seeds().items())},
        "layer_keys": {"count": len(keys), "sha256": hashlib.sha256("\n".join(keys).encode()).hexdigest()},
    }


def _generate() -> dict:
    return {name: _record(space) for name, space in _spaces().items()}


RECORDED = json.loads(FIXTURE.read_text())


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_decoding_is_unchanged(name):
    space = _spaces()[name]
    assert _record(space) == RECORDED[name]


def test_every_registered_space_is_recorded():
    assert set(SPACE_NAMES) <= set(RECORDED)


if __name__ == "__main__":
    FIXTURE.write_text(json.dumps(_generate(), indent=1) + "\n")
    print(f"wrote {FIXTURE}")
