"""Tiny models built in code, covering what the surgery must follow: residual adds, depthwise
convs, a concat, an MLP head and a small vision transformer. Factories take num_classes."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class TinyResNet(nn.Module):
    """Stem, two residual stages (the second with a projection shortcut), pooled linear head."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.a1 = nn.Conv2d(16, 24, 3, 1, 1, bias=False)
        self.a1_bn = nn.BatchNorm2d(24)
        self.a2 = nn.Conv2d(24, 16, 3, 1, 1, bias=False)
        self.a2_bn = nn.BatchNorm2d(16)
        self.b1 = nn.Conv2d(16, 32, 3, 2, 1, bias=False)
        self.b1_bn = nn.BatchNorm2d(32)
        self.b2 = nn.Conv2d(32, 32, 3, 1, 1, bias=False)
        self.b2_bn = nn.BatchNorm2d(32)
        self.b_short = nn.Sequential(nn.Conv2d(16, 32, 1, 2, bias=False), nn.BatchNorm2d(32))
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = F.relu(x + self.a2_bn(self.a2(F.relu(self.a1_bn(self.a1(x))))))
        x = F.relu(self.b_short(x) + self.b2_bn(self.b2(F.relu(self.b1_bn(self.b1(x))))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class TinyMobile(nn.Module):
    """An inverted residual block: expand 1x1, depthwise 3x3, project 1x1, residual add."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6())
        self.expand = nn.Sequential(nn.Conv2d(16, 48, 1, bias=False), nn.BatchNorm2d(48), nn.ReLU6())
        self.depthwise = nn.Sequential(nn.Conv2d(48, 48, 3, 1, 1, groups=48, bias=False), nn.BatchNorm2d(48), nn.ReLU6())
        self.project = nn.Sequential(nn.Conv2d(48, 16, 1, bias=False), nn.BatchNorm2d(16))
        self.head = nn.Sequential(nn.Conv2d(16, 32, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6())
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.project(self.depthwise(self.expand(x)))
        return self.fc(F.adaptive_avg_pool2d(self.head(x), 1).flatten(1))


class TinyConcat(nn.Module):
    """Two branches concatenated along channels, then a 1x1 conv and an MLP classifier."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1), nn.ReLU())
        self.left = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1), nn.BatchNorm2d(16), nn.ReLU())
        self.right = nn.Sequential(nn.Conv2d(16, 24, 1), nn.BatchNorm2d(24), nn.ReLU())
        self.mix = nn.Sequential(nn.Conv2d(40, 32, 1), nn.BatchNorm2d(32), nn.ReLU())
        self.hidden = nn.Linear(32, 48)
        self.fc = nn.Linear(48, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = self.mix(torch.cat([self.left(x), self.right(x)], dim=1))
        return self.fc(F.relu(self.hidden(F.adaptive_avg_pool2d(x, 1).flatten(1))))


def tiny_resnet(num_classes: int = 10) -> nn.Module:
    return TinyResNet(num_classes)


def tiny_mobile(num_classes: int = 10) -> nn.Module:
    return TinyMobile(num_classes)


def tiny_concat(num_classes: int = 10) -> nn.Module:
    return TinyConcat(num_classes)


def tiny_vit(num_classes: int = 10) -> nn.Module:
    """torchvision's own VisionTransformer, tiny: 2 layers, 4 heads of 8, MLP 64, 32x32 input."""
    from torchvision.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=64, num_classes=num_classes
    )


TINY_SPECS = {
    "resnet": "tests.tiny_models:tiny_resnet",
    "mobile": "tests.tiny_models:tiny_mobile",
    "concat": "tests.tiny_models:tiny_concat",
    "vit": "tests.tiny_models:tiny_vit",
}


class TinyPadded(nn.Module):
    """Only a residual whose shortcut zero-pads channels (a width hard-coded in the forward pass):
    nothing here can be pruned safely."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, 1, 1)
        self.widen = nn.Conv2d(8, 16, 3, 1, 1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = F.relu(self.widen(x) + F.pad(x, (0, 0, 0, 0, 4, 4)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def tiny_padded(num_classes: int = 10) -> nn.Module:
    return TinyPadded(num_classes)


class TinyAux(nn.Module):
    """An Inception-style auxiliary classifier that only the training-mode forward calls."""

    def __init__(self, num_classes: int = 10, aux_logits: bool = True):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1), nn.BatchNorm2d(16), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(16, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.ReLU())
        self.aux = (
            nn.Sequential(nn.Conv2d(32, 8, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))
            if aux_logits
            else None
        )
        self.head = nn.Sequential(nn.Conv2d(32, 32, 3, 1, 1), nn.BatchNorm2d(32), nn.ReLU())
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        x = self.body(self.stem(x))
        aux = self.aux(x) if self.training and self.aux is not None else None
        logits = self.fc(F.adaptive_avg_pool2d(self.head(x), 1).flatten(1))
        return (logits, aux) if self.training else logits


class VersionedBlock(nn.Module):
    """Reads its state-dict `version` metadata, as torchvision's MNASNet does: a state dict without
    the metadata is refused."""

    _version = 2

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)
        self.bn = nn.BatchNorm2d(channels)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args, **kwargs):
        if local_metadata.get("version") != 2:
            raise ValueError(f"version {local_metadata.get('version')} of VersionedBlock is not supported")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args, **kwargs)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class TinyVersioned(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, 1, 1)
        self.block = VersionedBlock(16)
        self.expand = nn.Conv2d(16, 32, 1)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(F.relu(self.expand(self.block(F.relu(self.stem(x))))), 1).flatten(1))


class CachedBiasAttention(nn.Module):
    """Attention whose bias table is gathered once per device and cached on the module outside
    training and tracing, as LeViT and EfficientFormer do; the cache is a plain attribute."""

    def __init__(self, dim: int, num_heads: int, tokens: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.bias_table = nn.Parameter(torch.zeros(num_heads, tokens))
        self.register_buffer("bias_index", torch.arange(tokens).repeat(tokens, 1), persistent=False)
        self.bias_cache: dict = {}

    def attention_bias(self, device) -> torch.Tensor:
        if self.training or torch.jit.is_tracing():
            return self.bias_table[:, self.bias_index]
        key = str(device)
        if key not in self.bias_cache:
            self.bias_cache[key] = self.bias_table[:, self.bias_index]
        return self.bias_cache[key]

    def forward(self, x):
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        weights = (qkv[0] @ qkv[1].transpose(-2, -1)) * qkv.shape[-1] ** -0.5 + self.attention_bias(x.device)
        return self.proj((weights.softmax(-1) @ qkv[2]).transpose(1, 2).reshape(batch, tokens, -1))


class TinyCachedBias(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.embed = nn.Conv2d(3, 32, 8, 8)
        self.attn = CachedBiasAttention(32, 4, 16)
        self.mlp = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32))
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)
        x = x + self.attn(x)
        x = x + self.mlp(x)
        return self.fc(x.mean(1))


def tiny_aux(num_classes: int = 10, aux_logits: bool = True) -> nn.Module:
    return TinyAux(num_classes, aux_logits)


def tiny_versioned(num_classes: int = 10) -> nn.Module:
    return TinyVersioned(num_classes)


def tiny_cached_bias(num_classes: int = 10) -> nn.Module:
    return TinyCachedBias(num_classes)


TINY_SPECS.update(
    {
        "aux": "tests.tiny_models:tiny_aux",
        "versioned": "tests.tiny_models:tiny_versioned",
        "cached_bias": "tests.tiny_models:tiny_cached_bias",
    }
)


class TinyWide(nn.Module):
    """A stride-2 stem, then six 3x3 convs of 64 channels at 16x16: enough work per layer for pruning to
    show on a CPU clock, and enough groups for a latency budget to be met in steps of 8 channels."""

    def __init__(self, num_classes: int = 10, depth: int = 6):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, 2, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        self.body = nn.Sequential(
            *[nn.Sequential(nn.Conv2d(64, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU()) for _ in range(depth)]
        )
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.body(self.stem(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def tiny_wide(num_classes: int = 10) -> nn.Module:
    return TinyWide(num_classes)


TINY_SPECS["wide"] = "tests.tiny_models:tiny_wide"
