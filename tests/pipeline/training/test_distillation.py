import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from pipeline.training.distillation import TrainingOptions, finetune


def _net(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))


def _loader():
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(40, 3, 2, 2, generator=generator), torch.randint(0, 3, (40,), generator=generator))
    return DataLoader(data, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(1))


def _train(checkpoint=None, stop_after=None):
    student, teacher, history = _net(0), _net(1).eval(), []

    def on_epoch(epoch, loss):
        if epoch == stop_after:
            raise KeyboardInterrupt  # killed during the next epoch's book-keeping: the checkpoint is the last epoch's
        return {"epoch": epoch, "loss": loss}

    torch.manual_seed(2)  # dropout draws from the global generator
    losses = finetune(
        student, teacher, _loader(), TrainingOptions(epochs=3), on_epoch=on_epoch, checkpoint=checkpoint, history=history
    )
    return student, losses, history


def test_a_killed_distillation_resumes_at_the_next_epoch_and_ends_as_if_never_killed(tmp_path, capsys):
    whole, whole_losses, whole_history = _train()
    checkpoint = tmp_path / "distill.pt"
    with pytest.raises(KeyboardInterrupt):
        _train(checkpoint, stop_after=2)
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 1
    resumed, losses, history = _train(checkpoint)
    assert "resumed after epoch 1" in capsys.readouterr().err
    assert [h["epoch"] for h in history] == [1, 2, 3] and losses == pytest.approx(whole_losses, rel=1e-6)
    for name, value in whole.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value)
    assert whole_history == history
    assert whole_losses[-1] < whole_losses[0]  # it trains


def _cnn(seed):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)
    )


def _images():
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(32, 3, 8, 8, generator=generator), torch.randint(0, 3, (32,), generator=generator))
    return DataLoader(data, batch_size=8, shuffle=False)


@pytest.mark.parametrize("amp", ["off", "bf16"])
def test_distillation_trains_with_and_without_mixed_precision_on_the_cpu(amp):
    student = _cnn(0)
    losses = finetune(student, _cnn(1).eval(), _images(), TrainingOptions(epochs=4, lr=0.05, amp=amp))
    assert losses[-1] < losses[0]
    assert all(p.dtype == torch.float32 for p in student.parameters())  # autocast computes in bf16, keeps fp32 weights


def test_channels_last_trains_the_same_model_and_hands_it_back_contiguous():
    plain, nhwc, layout = _cnn(0), _cnn(0), []
    finetune(plain, _cnn(1).eval(), _images(), TrainingOptions(epochs=2))
    on_batch = lambda: layout.append(nhwc[0].weight.is_contiguous(memory_format=torch.channels_last))  # noqa: E731
    finetune(nhwc, _cnn(1).eval(), _images(), TrainingOptions(epochs=2, channels_last=True), on_batch=on_batch)
    assert layout and all(layout)  # it trained in NHWC
    for (name, value), other in zip(plain.state_dict().items(), nhwc.state_dict().values()):
        torch.testing.assert_close(other, value, rtol=1e-4, atol=1e-5, msg=name)
        assert other.is_contiguous()


def test_fp16_mixed_precision_scales_the_loss_and_still_trains():
    student = _cnn(0)
    losses = finetune(student, _cnn(1).eval(), _images(), TrainingOptions(epochs=4, lr=0.05, amp="fp16"))
    assert losses[-1] < losses[0]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA tests need a GPU")
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_on_cuda_mixed_precision_distillation_trains_in_nhwc_and_keeps_float32_weights(amp):
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    from pipeline.data.loaders import DeviceLoader

    device = torch.device("cuda")
    student, teacher = _cnn(0).to(device), _cnn(1).eval().to(device)
    options = TrainingOptions(epochs=4, lr=0.05, amp=amp, channels_last=True)
    losses = finetune(student, teacher, DeviceLoader(_images(), device), options)
    assert losses[-1] < losses[0]
    assert all(p.dtype == torch.float32 and p.device.type == "cuda" and p.is_contiguous() for p in student.parameters())
