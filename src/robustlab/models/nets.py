"""Small reference architectures trained locally in seconds (no downloads)."""

from __future__ import annotations

from torch import nn


class SmallCNN(nn.Module):
    """Two 3x3 conv layers with BatchNorm, max-pool and a two-layer head; for small grayscale images
    of ``side`` x ``side`` pixels, or ``height`` x ``side`` when ``height`` is given."""

    def __init__(
        self, in_ch: int = 1, num_classes: int = 10, side: int = 8, width: int = 16,
        height: int | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_ch, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(2 * width * (side // 2) * ((side if height is None else height) // 2), 64),
            nn.ReLU(),
            nn.Linear(64, num_classes),
        )

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.head(self.features(x))


class MLP(nn.Module):
    """Fully connected ReLU network over flattened inputs."""

    def __init__(self, in_features: int = 64, hidden: int = 64, num_classes: int = 10) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.net(x)
