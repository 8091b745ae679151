"""Search spaces: decode, encode, sample, seeds."""

import dataclasses

import numpy as np
import pytest

from search_spaces import Block, BlockKind, SpecError, references
from search_spaces.scaling import DIVISOR, make_divisible
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


def test_v3_large_like_point_is_v3_large_with_a1s_expansions_so_netadapt_can_reach_it():
    space = get_space("mobilenetv3")
    spec = space.decode(space.seeds()["mobilenetv3_large_like"])
    large = references.get("mobilenetv3_large")
    assert spec.stem == large.stem and spec.head == large.head and spec.se == large.se
    assert len(spec.blocks) == len(large.blocks) == 15
    for i, (ours, v3) in enumerate(zip(spec.blocks, large.blocks)):
        for f in dataclasses.fields(Block):
            a, b = getattr(ours, f.name), getattr(v3, f.name)
            if f.name == "expand_channels":  # NetAdapt only shrinks, in steps of the divisor
                assert a >= b and (a - b) % DIVISOR == 0, (i, a, b)
            else:
                assert a == b, (i, f.name, a, b)
    # MnasNet-A1's layout: its ops and kernels block by block (A1's ×6 / ×3 expansions)
    a1 = references.get("mnasnet_a1")
    assert [(b.kind, b.kernel_size, b.expand_channels // b.in_channels) for b in spec.blocks] == \
        [(b.kind, b.kernel_size, b.expand_channels // b.in_channels) for b in a1.blocks[:15]]


def test_the_small_space_is_the_v3_space_at_half_width_by_the_reference_width_rule():
    small, large = get_space("mobilenetv3_small"), get_space("mobilenetv3")
    assert set(small.seeds()) == {"mobilenetv3_large_like_050"}
    half = small.decode(small.seeds()["mobilenetv3_large_like_050"])
    full = large.decode(large.seeds()["mobilenetv3_large_like"])
    v3_half = references.get("mobilenetv3_large_050")
    # MobileNetV3's stem stays at 16 filters below width 0.75; the last stage as MobileNetV3-Large ×0.5's
    assert half.stem == v3_half.stem and half.stem.out_channels == 16 and half.head == v3_half.head
    assert [b.out_channels for b in half.blocks] == [make_divisible(b.out_channels * 0.5) for b in full.blocks]
    assert [(b.kind, b.kernel_size, b.stride, b.se, b.activation) for b in half.blocks] == \
        [(b.kind, b.kernel_size, b.stride, b.se, b.activation) for b in full.blocks]
    rng = np.random.default_rng(0)
    assert all(small.decode(small.sample(rng)).stem.out_channels == 16 for _ in range(20))


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
