"""The stage-1 frame classifier: a timm ConvNeXt with a 6-way head.

Paper setting: ConvNeXt-Base, ImageNet 1000-way head replaced by a 6-way head
(laterality x key-frame category, order = ``cag_utils.data.labels.CLASSES``). The smoke profile
uses ``convnext_atto`` (3.7 M parameters) so it trains on a CPU.

Weights. Nothing is ever downloaded: ImageNet weights come only from a local file handed
to timm through ``pretrained_cfg_overlay=dict(file=...)`` with ``pretrained=True``
(a timm ``.safetensors``/``.pth`` state dict of the same architecture). timm then drops the
1000-way classifier (its shape differs) and keeps the new 6-way head at random init.
Without a file the whole network is randomly initialised.

Grayscale. Angiograms have one channel. Two equivalent options:

* ``in_chans=1`` (default here): timm builds a 1-channel stem; with a weights file it
  adapts the RGB stem by summing the kernel over the three input channels
  (``timm.models.adapt_input_conv``), which is exactly what the RGB network computes on a
  gray image repeated three times.
* ``in_chans=3``: keep the RGB stem; the data pipeline repeats the gray channel
  (``cag_utils.cnn.data.build_transform(in_chans=3)``). Same function up to the small spread
  of the ImageNet per-channel statistics; costs a little compute in the stem.

A weights file is fetched by hand on a connected machine, e.g. ``model.safetensors`` of the
Hugging Face repository ``timm/convnext_base.fb_in1k``, and its path given as
``pretrained_file`` (the training config key of the same name).
"""
from __future__ import annotations

from pathlib import Path

import timm
from torch import nn

from cag_utils.data.labels import CLASSES

__all__ = ["build_model", "count_parameters", "last_stage", "model_in_chans"]


def build_model(
    model_name: str = "convnext_atto",
    num_classes: int = len(CLASSES),
    in_chans: int = 1,
    pretrained_file: str | Path | None = None,
    drop_path_rate: float = 0.0,
    **timm_kwargs,
) -> nn.Module:
    """Create a timm ConvNeXt (or any timm classifier) with a ``num_classes`` head.

    ``pretrained_file``: local ImageNet checkpoint; ``None`` = random init (never downloads).
    ``timm_kwargs`` go to ``timm.create_model`` (e.g. ``depths``/``dims`` for a tiny test net).
    """
    if in_chans not in (1, 3):
        raise ValueError(f"in_chans must be 1 (gray) or 3 (gray repeated), got {in_chans}")
    kwargs = dict(num_classes=num_classes, in_chans=in_chans, drop_path_rate=drop_path_rate, **timm_kwargs)
    if pretrained_file is None:
        return timm.create_model(model_name, pretrained=False, **kwargs)
    path = Path(pretrained_file)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained_file {str(path)!r} does not exist (weights are never downloaded)")
    # The overlay replaces the hub/url source in timm's pretrained_cfg by a local file.
    return timm.create_model(
        model_name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs
    )


def model_in_chans(model: nn.Module) -> int:
    """Number of input channels of the first convolution (1 or 3 for our models)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
    raise ValueError("model has no Conv2d layer")


def last_stage(model: nn.Module) -> nn.Module:
    """The last ConvNeXt stage (NCHW output): the Grad-CAM target layer."""
    stages = getattr(model, "stages", None)
    if stages is None:
        raise ValueError(f"{type(model).__name__} has no .stages; pass target_layer explicitly")
    return stages[-1]


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
