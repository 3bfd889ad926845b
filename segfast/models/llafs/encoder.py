"""LLaFS's frozen image encoder: stage-2, -3 and -4 features resized to 1/8 scale and concatenated
(Supp B), 512 + 1024 + 2048 = 3584 channels for a ResNet-50.

kind "clip-rn50" (the paper's, Supp B: "ResNet50 from the CLIP"): open_clip's ModifiedResNet
(3-convolution stem, anti-aliased strides), weights from OpenAI's RN50 checkpoint file (`path`:
the RN50.pt that `clip.load("RN50")` downloads, TorchScript archive or state dict; read by
open_clip.load_openai_model), CLIP's normalisation. Without a path the RN50 is random-init.
kind "resnet50": torchvision's ImageNet ResNet-50 (a local state-dict file), ImageNet normalisation.
kind "tiny": a random-init four-stage conv net of the same shape (strides 4, 8, 16, 32) for the
built-in demo and tests.

As in the paper the encoder is frozen (and kept in eval mode) by default; `frozen=False` lets a
random-init encoder learn, which is what the offline demo needs, having no pretrained weights.
"""

import torch
import torch.nn.functional as F
from torch import nn

from segfast.frames import CLIP_MEAN, CLIP_STD

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
KINDS = ("clip-rn50", "resnet50", "tiny")


def _stage(cin, cout):
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=2, padding=1),
        nn.GroupNorm(4, cout),
        nn.ReLU(),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.GroupNorm(4, cout),
        nn.ReLU(),
    )


def clip_resnet(path: str = ""):
    """open_clip's ModifiedResNet: OpenAI's weights from `path`, else a random-init RN50."""
    import open_clip

    if path:
        return open_clip.load_openai_model(path, precision="fp32", device="cpu").visual
    return open_clip.create_model("RN50", pretrained=None).visual


def _channels(stage: nn.Sequential) -> int:
    return stage[-1].conv3.out_channels if hasattr(stage[-1], "conv3") else stage[-1].out_channels


class ImageEncoder(nn.Module):
    def __init__(self, kind: str = "tiny", path: str = "", widths=(16, 32, 64, 64), frozen: bool = True):
        super().__init__()
        self.frozen = frozen
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        if kind == "clip-rn50":
            net = clip_resnet(path)
            stem = [net.conv1, net.bn1, net.act1, net.conv2, net.bn2, net.act2, net.conv3, net.bn3, net.act3]
            self.stem = nn.Sequential(*stem, net.avgpool, net.layer1)
            self.stages = nn.ModuleList([net.layer2, net.layer3, net.layer4])
            self.out_channels = sum(_channels(s) for s in self.stages)
            mean, std = CLIP_MEAN, CLIP_STD
        elif kind == "resnet50":
            from torchvision.models import resnet50

            net = resnet50(weights=None)
            if path:
                net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1)
            self.stages = nn.ModuleList([net.layer2, net.layer3, net.layer4])
            self.out_channels = 512 + 1024 + 2048
        elif kind == "tiny":
            if path:
                raise ValueError(
                    "model.options.encoder_path is for clip-rn50 or resnet50; the tiny encoder is random-init"
                )
            w1, w2, w3, w4 = widths
            self.stem = nn.Sequential(nn.Conv2d(3, w1, 3, stride=2, padding=1), nn.ReLU(), _stage(w1, w1))
            self.stages = nn.ModuleList([_stage(w1, w2), _stage(w2, w3), _stage(w3, w4)])
            self.out_channels = w2 + w3 + w4
            for m in self.modules():  # variance-preserving, so random features keep their contrast
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        else:
            raise ValueError(f"model.options.encoder must be one of {', '.join(KINDS)}, got {kind!r}")
        self.register_buffer("mean", torch.tensor(mean)[:, None, None], persistent=False)
        self.register_buffer("std", torch.tensor(std)[:, None, None], persistent=False)
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
