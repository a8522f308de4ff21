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
