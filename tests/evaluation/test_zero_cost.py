"""Zero-cost scores: exact values on networks small enough to work out by hand, and the properties the
papers define them by, on networks of the spaces."""

import math

import pytest
import torch
from torch import nn

from evaluation import zero_cost
from search_spaces import references
from search_spaces.builder import build_model


def test_naswot_is_the_log_determinant_of_the_hamming_kernel():
    # One ReLU on 2-pixel images: codes [1, 0] and [1, 1]; N_A = 2, K = [[2, 1], [1, 2]], |K| = 3.
    images = torch.tensor([[1.0, -1.0], [1.0, 1.0]]).reshape(2, 1, 1, 2)
    assert zero_cost.naswot(nn.Sequential(nn.ReLU(inplace=True)), images) == pytest.approx(math.log(3.0))
    # Two activations add their kernels: the same codes twice, K = [[4, 2], [2, 4]], |K| = 12.
    assert zero_cost.naswot(nn.Sequential(nn.ReLU(), nn.Hardswish()), images) == pytest.approx(math.log(12.0))


def test_naswot_refuses_a_batch_whose_images_give_one_code():
    same = torch.ones(3, 1, 2, 2)
    with pytest.raises(ValueError, match="singular"):
        zero_cost.naswot(nn.Sequential(nn.ReLU()), same)
    with pytest.raises(ValueError, match="activations"):
        zero_cost.naswot(nn.Sequential(nn.Identity()), torch.randn(2, 1, 2, 2))


def test_synflow_of_a_linear_layer_is_its_l1_norm():
    # R = Σ|w_i|·1 and ∂R/∂w_i = 1, so Σ|w_i · ∂R/∂w_i| = Σ|w_i|.
    lin = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.5, -2.0, 1.0, -0.25]]))
    net = nn.Sequential(nn.Flatten(), lin)
    assert zero_cost.synflow(net, (1, 2, 2)) == pytest.approx(math.log(3.75))
    assert lin.weight[0, 1] == -2.0  # the model passed in keeps its signs


def test_synflow_ignores_batchnorm_statistics():
    torch.manual_seed(0)
    conv, head = nn.Conv2d(1, 3, 3), nn.Linear(3, 2)
    bn = nn.BatchNorm2d(3)
    bn.running_mean.fill_(5.0)
    bn.running_var.fill_(0.01)
    with_bn = nn.Sequential(conv, bn, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), head)
    without = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), head)
    assert zero_cost.synflow(with_bn, (1, 5, 5)) == pytest.approx(zero_cost.synflow(without, (1, 5, 5)))


def test_snip_matches_the_gradient_worked_out_by_autograd_on_a_copy():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    x, y = torch.randn(5, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1])
    w = net[1].weight.detach().clone().requires_grad_(True)
    loss = nn.functional.cross_entropy(x.flatten(1) @ w.T + net[1].bias.detach(), y)
    (g,) = torch.autograd.grad(loss, w)
    assert zero_cost.snip(net, x, y) == pytest.approx(float((w.detach() * g).abs().sum()), rel=1e-6)
    assert net[1].weight.grad is None  # the model passed in is untouched


def test_every_score_runs_on_a_reference_network_and_leaves_it_untouched():
    torch.manual_seed(0)
    model = build_model(references.get("mobilenetv3_small").replace(in_channels=1, num_classes=10))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images, labels = torch.randn(8, 1, 32, 32), torch.arange(8) % 10
    values = {name: zero_cost.score(name, model, images, labels) for name in zero_cost.SCORES}
    assert all(math.isfinite(v) for v in values.values()), values
    assert values["snip"] > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="unknown zero-cost score"):
        zero_cost.score("flops", model, images, labels)
