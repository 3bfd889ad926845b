"""Tiny segment-anything models and images for the SAM tests.

A random SAM's masks hardly depend on the prompt (every point gets nearly the same noisy field,
so box NMS keeps one or two), which would leave the everything-mode filters and NMS untested.
`local_sam` adds one term to the real decoder's logits: the product of the point's and each
pixel's random Fourier positional features, which is a bump around the point (a random-feature
Gaussian kernel), at a different level for each multimask output. The predicted IoUs are
spread around the default threshold 0.88 so that filter keeps about half.
"""

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import MaskDecoder

from segfast.models.sam.build import tiny_sam


class LocalDecoder(MaskDecoder):
    def predict_masks(self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings):
        masks, iou = super().predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings
        )
        point = sparse_prompt_embeddings[:, 0] - self.foreground.weight[0]  # the point's features alone
        kernel = torch.einsum("nc,chw->nhw", point, image_pe[0]) / (image_pe.shape[1] / 2)
        kernel = F.interpolate(kernel[:, None], size=masks.shape[-2:], mode="bilinear", align_corners=False)
        levels = torch.tensor(self.levels, device=masks.device)[:, None, None]
        return 0.05 * masks + 400.0 * (kernel - levels), iou


def local_sam(seed: int = 0, levels=(0.5, 0.5, 0.6, 0.7)):
    """levels: the bump's threshold per multimask output (a level above 1 makes that output empty)."""
    sam = tiny_sam(seed=seed)
    old = sam.mask_decoder
    decoder = LocalDecoder(
        transformer_dim=old.transformer_dim,
        transformer=old.transformer,
        num_multimask_outputs=old.num_multimask_outputs,
        iou_head_depth=3,
        iou_head_hidden_dim=old.iou_prediction_head.layers[0].out_features,
    )
    decoder.load_state_dict(old.state_dict())
    decoder.foreground = sam.prompt_encoder.point_embeddings[1]
    decoder.levels = tuple(levels)
    with torch.no_grad():
        sam.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix.mul_(1.5)
        head = decoder.iou_prediction_head.layers[-1]
        head.weight.mul_(0.5)
        head.bias.fill_(0.88)
    sam.mask_decoder = decoder
    return sam.eval()


def blob_image(seed: int, height: int = 120, width: int = 200) -> np.ndarray:
    """HWC uint8: flat background with a few coloured rectangles."""
    rng = np.random.default_rng(seed)
    image = np.empty((height, width, 3), np.uint8)
    image[:] = rng.integers(0, 256, 3)
    for _ in range(6):
        y, x = rng.integers(0, height - 8), rng.integers(0, width - 8)
        image[y : y + rng.integers(8, height // 2), x : x + rng.integers(8, width // 2)] = rng.integers(0, 256, 3)
    return image
