"""Search spaces: decode, encode, sample, seeds."""

import numpy as np
import pytest

from search_spaces import BlockKind, SpecError, references
from search_spaces.spaces import SPACE_NAMES, get_space


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_random_points_decode_to_valid_specs_and_encode_back(name):
    space = get_space(name)
    rng = np.random.default_rng(0)
    ids = set()
    for _ in range(40):
        params = space.sample(rng)
        spec = space.decode(params)
        assert space.decode(space.encode(spec)) == spec
        ids.add(spec.arch_id)
    assert len(ids) > 35


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_sampling_is_seeded(name):
    space = get_space(name)
    a = [space.sample(np.random.default_rng(7)) for _ in range(3)]
    b = [space.sample(np.random.default_rng(7)) for _ in range(3)]
    assert a == b


def test_sizes():
    # 7 blocks × (4 ops · 2 kernels · 2 SE · 2 skips · 3 filters · 3 layer counts) [· 2 activations]
    assert get_space("mnasnet").size == 288 ** 7
    assert get_space("mobilenetv3").size == 576 ** 7


def test_mnasnet_a1_is_encoded_exactly():
    space = get_space("mnasnet")
    a1 = references.get("mnasnet_a1")
    assert space.decode(space.seeds()["mnasnet_a1"]).replace(name=a1.name) == a1
    assert space.decode(space.encode(a1)).replace(name=a1.name) == a1


def test_v3_large_like_point_has_the_v3_layout():
    space = get_space("mobilenetv3")
    spec = space.decode(space.seeds()["mobilenetv3_large_like"])
    large = references.get("mobilenetv3_large")
    assert len(spec.blocks) == len(large.blocks) == 15
    assert [b.out_channels for b in spec.blocks] == [b.out_channels for b in large.blocks]
    assert [b.stride for b in spec.blocks] == [b.stride for b in large.blocks]
    assert [b.se for b in spec.blocks] == [b.se for b in large.blocks]
    assert [b.activation for b in spec.blocks] == [b.activation for b in large.blocks]
    assert spec.stem == large.stem and spec.head == large.head and spec.se == large.se


def test_only_the_first_layer_of_a_block_strides_and_stride2_blocks_never_vanish():
    space = get_space("mnasnet")
    params = space.seeds()["mnasnet_a1"] | {f"b{i}.layers": -1 for i in range(7)}
    spec = space.decode(params)
    # blocks 0 and 6 (stride 1, one layer) vanish; the stride-2 blocks keep at least one layer
    assert [b.out_channels for b in spec.blocks] == [24, 40, 40, 80, 80, 80, 112, 160, 160]
    assert sum(b.stride == 2 for b in spec.blocks) == 4


def test_conv_ops_decode_to_the_right_block_kinds():
    space = get_space("mnasnet")
    base = space.seeds()["mnasnet_a1"]
    for op, kind, ratio in [("conv", BlockKind.CONV, None), ("dsconv", BlockKind.DSCONV, 1),
                            ("mbconv3", BlockKind.MBCONV, 3), ("mbconv6", BlockKind.MBCONV, 6)]:
        spec = space.decode(base | {"b3.op": op})
        block = spec.blocks[6]  # first layer of block 3 (80 filters), input 40
        assert block.kind is kind
        if ratio:
            assert block.expand_channels == 40 * ratio


def test_bad_decisions_are_named():
    space = get_space("mnasnet")
    params = space.seeds()["mnasnet_a1"]
    with pytest.raises(SpecError, match=r"b2.kernel.*3, 5"):
        space.decode(params | {"b2.kernel": 7})
    with pytest.raises(SpecError, match="b9.op"):
        space.decode(params | {"b9.op": "conv"})
    with pytest.raises(SpecError, match="missing decision"):
        space.decode({k: v for k, v in params.items() if k != "b0.op"})


def test_architectures_outside_the_space_are_refused():
    with pytest.raises(SpecError, match="not in search space"):
        get_space("mnasnet").encode(references.get("mobilenetv3_large"))


def test_io_follows_the_dataset():
    space = get_space("mobilenetv3_small", resolution=224, in_channels=1, num_classes=10)
    spec = space.decode(space.sample(np.random.default_rng(1)))
    assert (spec.in_channels, spec.num_classes, spec.resolution) == (1, 10, 224)
