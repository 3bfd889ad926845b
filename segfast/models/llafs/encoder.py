"""LLaFS's frozen image encoder: stage-2, -3 and -4 features resized to 1/8 scale and concatenated.

kind "resnet50": torchvision's ResNet-50 (stages = layer2, layer3, layer4: 512 + 1024 + 2048
channels), weights from a local torchvision state-dict file (`path`), ImageNet normalisation.
kind "tiny": a random-init four-stage conv net of the same shape (strides 4, 8, 16, 32) for the
built-in demo and tests. As in the paper the encoder is frozen (and kept in eval mode) by
default; `frozen=False` lets a random-init encoder learn, which is what the offline demo needs,
having no pretrained weights to freeze.
"""

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _stage(cin, cout):
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=2, padding=1),
        nn.GroupNorm(4, cout),
        nn.ReLU(),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.GroupNorm(4, cout),
        nn.ReLU(),
    )


class ImageEncoder(nn.Module):
    def __init__(self, kind: str = "tiny", path: str = "", widths=(16, 32, 64, 64), frozen: bool = True):
        super().__init__()
        self.frozen = frozen
        if kind == "resnet50":
            from torchvision.models import resnet50

            net = resnet50(weights=None)
            if path:
                net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1)
            self.stages = nn.ModuleList([net.layer2, net.layer3, net.layer4])
            self.out_channels = 512 + 1024 + 2048
        elif kind == "tiny":
            if path:
                raise ValueError("model.options.encoder_path is for kind resnet50; the tiny encoder is random-init")
            w1, w2, w3, w4 = widths
            self.stem = nn.Sequential(nn.Conv2d(3, w1, 3, stride=2, padding=1), nn.ReLU(), _stage(w1, w1))
            self.stages = nn.ModuleList([_stage(w1, w2), _stage(w2, w3), _stage(w3, w4)])
            self.out_channels = w2 + w3 + w4
            for m in self.modules():  # variance-preserving, so random features keep their contrast
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        else:
            raise ValueError(f"model.options.encoder must be tiny or resnet50, got {kind!r}")
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN)[:, None, None], persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD)[:, None, None], persistent=False)
        if frozen:
            self.requires_grad_(False)
            self.eval()

    def train(self, mode: bool = True):
        return super().train(mode and not self.frozen)  # frozen: BatchNorm statistics never move

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> (B, out_channels, ceil(H/8), ceil(W/8))."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            return self._features(images)

    def _features(self, images):
        x = self.stem((images - self.mean) / self.std)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        size = feats[0].shape[-2:]
        return torch.cat(
            [feats[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in feats[1:]], 1
        )
