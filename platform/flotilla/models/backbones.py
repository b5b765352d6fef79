"""Feature extractors shared by every task head of a model family.

Both backbones end in a global average pool, so they accept any input size
(64x64 default, 48x48 FER crops, ...) and expose ``out_features`` for the heads.

Cost matters more than accuracy here: the platform's tests and demos train on
CPUs, so ``small_cnn`` downsamples 4x in its first two layers (a stride-2 stem,
then a max-pool) before spending any real compute, and both backbones are built
in ``channels_last`` memory format — the uint8 NHWC batches from the loader are
already in that layout after a permute, and oneDNN's convolutions run ~2x faster
on it (cuDNN with AMP prefers it too).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from flotilla.errors import SpecError
from flotilla.models.backbone_names import DEFAULT_BACKBONE, RESNET, SMALL_CNN, check_backbone_name


def _conv_bn_relu(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    # bias=False: BatchNorm's shift makes a conv bias redundant.
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class SmallCNN(nn.Module):
    """Four conv-bn-relu blocks (widths w, 2w, 4w, 8w) with early downsampling; ~0.4M params at w=32.

    64x64 -> stem (stride 2) 32 -> pool 16 -> block 16 -> pool 8 -> block 8 -> pool 4 -> block 4 -> GAP.
    """

    def __init__(self, width: int = 32, in_channels: int = 3) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            *_conv_bn_relu(in_channels, w, stride=2),
            nn.MaxPool2d(2),
            *_conv_bn_relu(w, 2 * w),
            nn.MaxPool2d(2),
            *_conv_bn_relu(2 * w, 4 * w),
            nn.MaxPool2d(2),
            *_conv_bn_relu(4 * w, 8 * w),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_features = 8 * w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.features(x)), 1)


class BasicBlock(nn.Module):
    """The ResNet-18/34 block: two 3x3 convs with an identity (or 1x1 projection) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class SmallResNet(nn.Module):
    """ResNet-18's shape shrunk for 64x64 faces: stem (stride 2 + max-pool), then 4 stages of 2 BasicBlocks.

    Widths w, 2w, 4w, 8w; stages 2-4 halve the resolution (64 -> 16 -> 16 -> 8 -> 4 -> 2 -> GAP).
    The last BN of each residual branch starts at zero so every block begins as the identity,
    which makes the deeper net train as easily as the small CNN from scratch (Goyal et al. 2017).
    """

    def __init__(self, width: int = 32, in_channels: int = 3, blocks: tuple[int, ...] = (2, 2, 2, 2)) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(*_conv_bn_relu(in_channels, w, stride=2), nn.MaxPool2d(2))
        stages: list[nn.Module] = []
        cin = w
        for i, n in enumerate(blocks):
            cout = w * 2**i
            layers = [BasicBlock(cin, cout, stride=1 if i == 0 else 2)]
            layers += [BasicBlock(cout, cout) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layers))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_features = cin
        for m in self.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.stages(self.stem(x))), 1)


BACKBONES: dict[str, Callable[[int, int], nn.Module]] = {
    SMALL_CNN: lambda width, in_channels: SmallCNN(width, in_channels),
    RESNET: lambda width, in_channels: SmallResNet(width, in_channels),
}


def build_backbone(name: str = DEFAULT_BACKBONE, width: int = 32, in_channels: int = 3) -> nn.Module:
    """A fresh backbone by name (the name comes from a user's spec, hence SpecError on a typo)."""
    check_backbone_name(name)
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise SpecError(f"backbone width must be a positive integer, got {width!r}")
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise SpecError(f"backbone in_channels must be a positive integer, got {in_channels!r}")
    net = BACKBONES[name](width, in_channels)
    return net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs omit memory_format
