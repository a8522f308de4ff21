"""Images -> model inputs, as the model was trained to see them: resize to size / crop_pct, centre
crop, normalise (the torchvision and timm evaluation recipe)."""

from __future__ import annotations

from pipeline.models.specs import Preprocessing


def transform_for(pre: Preprocessing):
    from torchvision import transforms as T

    channels, height, width = pre.input_size
    mode = T.InterpolationMode(pre.interpolation)
    if height == width:
        resize = T.Resize(round(height / pre.crop_pct), interpolation=mode)  # shorter side, aspect kept
    else:
        resize = T.Resize((round(height / pre.crop_pct), round(width / pre.crop_pct)), interpolation=mode)
    steps = [resize, T.CenterCrop((height, width))]
    mean, std = pre.mean, pre.std
    if channels == 1:
        steps.append(T.Grayscale())
        mean, std = mean[:1], std[:1]
    return T.Compose([*steps, T.ToTensor(), T.Normalize(mean, std)])
