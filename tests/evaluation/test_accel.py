"""The device abstraction: every device-dependent line of the training code runs here on the CPU."""

from __future__ import annotations

import pytest
import torch

from evaluation import accel
from evaluation.training import TrainConfig


def test_device_names_resolve_and_cuda_without_cuda_is_one_clear_error():
    assert accel.device("cpu") == torch.device("cpu")
    assert accel.device(None) == accel.device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(accel.DeviceError, match="unknown device 'tpu'"):
        accel.device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(accel.DeviceError, match="--device cuda: CUDA is not available on this machine") as e:
            accel.device("cuda")
        assert "\n" not in str(e.value)
    assert accel.DEFAULT_DEVICE == TrainConfig().device == "auto"
    with pytest.raises(ValueError, match="TrainConfig.device must be auto, cpu, cuda or cuda:N"):
        TrainConfig(device="gpu")


def test_mixed_precision_is_a_pass_through_on_the_cpu():
    cpu = torch.device("cpu")
    assert not accel.uses_amp(cpu) and accel.uses_amp(torch.device("cuda"))
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = accel.grad_scaler(cpu)
    x = torch.ones(4, 3)
    with accel.autocast(cpu):
        loss = model(accel.to_device(x, cpu)).sum()
    assert loss.dtype == torch.float32 and scaler.scale(loss) is loss
    before = model.weight.detach().clone()
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    assert torch.allclose(model.weight, before - 0.1 * torch.ones(2, 3) * 4)
    accel.synchronize(cpu)
    assert accel.describe(cpu).startswith("cpu (")


def test_training_on_cpu_explicitly_is_training_by_default_here():
    from evaluation.data import Dataset
    from evaluation.training import train_model

    if torch.cuda.is_available():
        pytest.skip("auto is CUDA here")
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 1, 8, 8), dtype=torch.uint8, generator=g)
    data = Dataset(name="toy", train_images=images, train_labels=torch.arange(40) % 2, test_images=images[:4],
                   test_labels=torch.arange(4) % 2, num_classes=2, class_names=None, source="memory")

    def run(**kw):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                    torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 2))
        res = train_model(model, data, range(30), range(30, 40),
                          TrainConfig(steps=3, batch_size=8, resolution_px=8, yield_to_measurements=False, **kw))
        return res.val_loss, [p.detach().clone() for p in model.parameters()]

    (loss_a, params_a), (loss_b, params_b) = run(), run(device="cpu")
    assert loss_a == loss_b and all(torch.equal(a, b) for a, b in zip(params_a, params_b))
