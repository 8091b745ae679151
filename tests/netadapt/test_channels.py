"""Channel groups, proposals and weight inheritance (NetAdapt's building blocks)."""

from __future__ import annotations

import pytest
import torch

from netadapt.channels import channel_groups, inherit_weights, same_structure, scale_widths, with_widths
from netadapt.proposals import candidate_widths, make_proposals, smallest_network
from search_spaces import SpecError, count, references
from search_spaces.builder import build_model

SMALL = references.get("mobilenetv3_small").replace(num_classes=10, resolution=32)
LARGE = references.get("mobilenetv3_large").replace(num_classes=10, resolution=32)
A1 = references.get("mnasnet_a1").replace(num_classes=10, resolution=32)


def _group(spec, name):
    return next(g for g in channel_groups(spec) if g.name == name)


@pytest.mark.parametrize("spec", [SMALL, LARGE, A1], ids=["v3-small", "v3-large", "mnasnet-a1"])
def test_groups_cover_every_width_once_and_residual_chains_share_one(spec):
    groups = channel_groups(spec)
    slots = [s for g in groups for s in g.slots]
    assert len(slots) == len(set(slots))
    assert len(slots) == 1 + 3 * len(spec.blocks) + bool(spec.head.conv_channels) + bool(spec.head.hidden_channels)
    slot_group = {s: g.index for g in groups for s in g.slots}
    for i, b in enumerate(spec.blocks):
        if b.residual:
            assert slot_group[("in", i)] == slot_group[("out", i)]
        assert slot_group[("in", i)] == slot_group[("stem",) if i == 0 else ("out", i - 1)]
    # the round trip through with_widths at the current widths is the identity
    assert with_widths(spec, {g.index: g.width for g in groups}) == spec


def test_v3_large_bottleneck_of_the_80_channel_stage_spans_its_residual_blocks():
    g = _group(LARGE, "bottleneck blocks[6]..blocks[10]")
    assert g.width == 80 and g.kind == "bottleneck"
    child = with_widths(LARGE, {g.index: 64})
    assert [b.out_channels for b in child.blocks[6:10]] == [64] * 4
    assert [b.in_channels for b in child.blocks[7:11]] == [64] * 4
    assert child.blocks[10].out_channels == 112  # the consumer's output is another group
    assert same_structure(LARGE, child)


def test_expansion_width_equal_to_input_changes_structure_and_is_never_proposed():
    g = _group(SMALL, "blocks[1].expand")
    b = SMALL.blocks[1]
    child = with_widths(SMALL, {g.index: b.in_channels})
    assert not same_structure(SMALL, child)  # the 1×1 expansion conv would vanish
    proposals = make_proposals(SMALL, lambda s: count(s).madds / 1e6, count(SMALL).madds / 1e6, 1e9)
    assert proposals == []  # nothing can cut an impossible delta
    everything = make_proposals(SMALL, lambda s: count(s).madds / 1e6, count(SMALL).madds / 1e6, 0.01)
    assert all(same_structure(SMALL, p.spec) for p in everything)


def test_proposal_is_the_widest_width_that_meets_the_cut():
    cost = lambda s: count(s).madds / 1e6  # noqa: E731 - a monotone stand-in for latency
    current = cost(SMALL)
    delta = 0.01 * current
    for p in make_proposals(SMALL, cost, current, delta):
        assert p.latency_ms <= current - delta
        wider = p.new_width + 8
        if wider < p.group.width:
            assert cost(with_widths(SMALL, {p.group.index: wider})) > current - delta
        assert p.new_width % 8 == 0


def test_candidate_widths_and_smallest_network():
    g = _group(SMALL, "head.conv")
    assert candidate_widths(g, 8, 8)[:2] == [568, 560] and candidate_widths(g, 8, 8)[-1] == 8
    tiny = smallest_network(SMALL)
    assert same_structure(SMALL, tiny)
    assert count(tiny).madds < count(SMALL).madds / 5


def _outputs(spec, state, x):
    model = build_model(spec).eval()
    model.load_state_dict(state, strict=True)
    with torch.no_grad():
        return model(x)


def _trained_like(spec, seed=0):
    torch.manual_seed(seed)
    model = build_model(spec)
    for m in model.modules():  # non-trivial BN statistics, as after training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_inheritance_with_nothing_removed_reproduces_the_parent_exactly():
    state = _trained_like(LARGE)
    same = inherit_weights(LARGE, state, LARGE)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(_outputs(LARGE, state, x), _outputs(LARGE, same, x))


@pytest.mark.parametrize("spec", [SMALL, LARGE, A1], ids=["v3-small", "v3-large", "mnasnet-a1"])
def test_pruned_shapes_match_the_child_spec_for_every_group(spec):
    state = _trained_like(spec)
    for g in channel_groups(spec):
        w = candidate_widths(g, 8, 8)
        child = None
        for width in w:
            c = with_widths(spec, {g.index: width})
            if same_structure(spec, c):
                child = c
                break
        if child is None:
            continue
        pruned = inherit_weights(spec, state, child)
        build_model(child).load_state_dict(pruned, strict=True)  # raises on any shape mismatch


def _zero_channels(state, names_dim0, channels):
    for name in names_dim0:
        state[name][channels] = 0


def test_removing_dead_expansion_channels_keeps_the_function():
    """Channels whose filters are all zero carry nothing: the L2 rule must drop exactly those."""
    spec = LARGE
    i = 4  # an MBConv with SE (exp 120 at V3-Large's fifth block)
    assert spec.blocks[i].se and spec.blocks[i].expand_channels != spec.blocks[i].in_channels
    state = _trained_like(spec)
    p = f"layers.{i + 1}"
    dead = torch.arange(0, 120, 5)  # 24 channels
    _zero_channels(state, [f"{p}.expand.0.weight", f"{p}.expand.1.weight", f"{p}.expand.1.bias",
                           f"{p}.depthwise.0.weight", f"{p}.depthwise.1.weight", f"{p}.depthwise.1.bias"], dead)
    g = _group(spec, f"blocks[{i}].expand")
    child = with_widths(spec, {g.index: 96})
    pruned = inherit_weights(spec, state, child)
    # the SE squeeze shrank too (1/4 of the expansion, rounded to 8): it keeps its strongest filters
    assert pruned[f"{p}.se.reduce.weight"].shape[0] == 24 and state[f"{p}.se.reduce.weight"].shape[0] == 32
    # zero the squeeze channels that were dropped so that the comparison isolates the expansion cut
    reduce_norm = state[f"{p}.se.reduce.weight"].pow(2).flatten(1).sum(1)
    dropped_se = torch.topk(reduce_norm, 8, largest=False).indices
    _zero_channels(state, [f"{p}.se.reduce.weight", f"{p}.se.reduce.bias"], dropped_se)
    state[f"{p}.se.expand.weight"][:, dropped_se] = 0
    x = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(_outputs(spec, state, x), _outputs(child, inherit_weights(spec, state, child), x))


def test_removing_dead_bottleneck_channels_keeps_the_function():
    """A residual chain: dead channels in every writer (producer and residual blocks) are dropped everywhere."""
    spec = LARGE
    g = _group(spec, "bottleneck blocks[6]..blocks[10]")  # producer block 6, residual 7..9, consumer 10
    state = _trained_like(spec)
    dead = torch.tensor([1, 7, 30, 31, 50, 51, 52, 79])
    for i in (6, 7, 8, 9):  # writers: their projections (conv + BN)
        p = f"layers.{i + 1}"
        _zero_channels(state, [f"{p}.project.0.weight", f"{p}.project.1.weight", f"{p}.project.1.bias"], dead)
    child = with_widths(spec, {g.index: 72})
    pruned = inherit_weights(spec, state, child)
    assert pruned["layers.8.expand.0.weight"].shape[1] == 72  # a consumer's input shrank with the chain
    x = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(_outputs(spec, state, x), _outputs(child, pruned, x))


def test_inheritance_refuses_a_different_structure_or_growth_or_foreign_weights():
    state = _trained_like(SMALL)
    with pytest.raises(ValueError, match="layers differ"):
        inherit_weights(SMALL, state, LARGE)
    g = _group(SMALL, "head.conv")
    narrower = with_widths(SMALL, {g.index: 512})
    with pytest.raises(ValueError, match="grows"):
        inherit_weights(narrower, inherit_weights(SMALL, state, narrower), SMALL)
    del state["layers.0.conv.0.weight"]
    with pytest.raises(ValueError, match="do not match"):
        inherit_weights(SMALL, state, narrower)


def test_width_multiplier_baseline_keeps_structure_and_shrinks_costs():
    half = scale_widths(LARGE, 0.5)
    assert same_structure(LARGE, half)
    assert count(half).madds < 0.5 * count(LARGE).madds
    assert scale_widths(LARGE, 1.0) == LARGE
    with pytest.raises((SpecError, ValueError)):
        with_widths(LARGE, {0: 0})


def test_selection_rule_slope_or_accuracy_and_ties_go_to_the_larger_cut():
    from netadapt.refine import choose

    rows = [
        {"accuracy": 0.80, "slope": -0.5, "delta_latency_pred_ms": -0.02, "error": None},
        {"accuracy": 0.79, "slope": -0.1, "delta_latency_pred_ms": -0.20, "error": None},  # loses more, saves far more
        {"accuracy": None, "slope": None, "delta_latency_pred_ms": -0.5, "error": "diverged"},
        {"accuracy": 0.79, "slope": -0.1, "delta_latency_pred_ms": -0.30, "error": None},
    ]
    assert choose(rows, "slope") == 3
    assert choose(rows, "accuracy") == 0
    assert choose([rows[2]], "slope") is None


def test_width_multiplier_keeps_the_structure_of_any_searched_network():
    """Regression: an expansion rounded onto its input merged two groups (found by CI on a searched net)."""
    import numpy as np

    from search_spaces.spaces import get_space

    for name in ("mobilenetv3", "mnasnet", "mobilenetv3_small"):
        space = get_space(name, resolution=32, in_channels=1, num_classes=10)
        rng = np.random.default_rng(0)
        for _ in range(40):
            spec = space.decode(space.sample(rng))
            for m in (0.3, 0.5, 0.62, 0.785, 0.9):
                assert same_structure(spec, scale_widths(spec, m)), (name, m, spec.arch_id)
        child = scale_widths(spec, 0.5)  # the last one: its weights carry over with the right shapes
        build_model(child).load_state_dict(inherit_weights(spec, build_model(spec).state_dict(), child), strict=True)
