"""Image and mask inputs of the [SEG]-token models: SAM's frame (longest side resized to S,
normalised, zero-padded bottom/right — exactly segment-anything's ResizeLongestSide followed by
Sam.preprocess) and the CLIP tower's input (CLIPImageProcessor's resize and centre crop); and
the way back for evaluation: masks at the image's original resolution (to_original,
score_at_original)."""

import numpy as np
import torch
import torch.nn.functional as F

SAM_MEAN, SAM_STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def shrink_longest_side(image: np.ndarray, max_side: int) -> np.ndarray:
    """The image scaled down (OpenCV INTER_AREA, size truncated to int) so that its longer side is
    at most max_side, as LLM-Seg's prepare_datasets scripts scale images before SAM; smaller
    images (and max_side 0) are returned as they are."""
    h, w = image.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return image
    import cv2

    scale = max_side / max(h, w)
    return cv2.resize(image, (int(w * scale), int(h * scale)), interpolation=cv2.INTER_AREA)


def read_rgb(path) -> np.ndarray:
    """(H, W, 3) uint8 RGB array of an image file (a writable copy)."""
    from PIL import Image

    with Image.open(path) as im:
        return np.array(im.convert("RGB"))


def valid_size(height: int, width: int, size: int) -> tuple[int, int]:
    """The unpadded (h, w) in SAM's frame: ResizeLongestSide.get_preprocess_shape."""
    scale = size / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def _rgb(image: np.ndarray) -> torch.Tensor:
    """(1, 3, H, W) uint8 of an (H, W, 3) uint8 RGB array."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)[None]


def sam_frame(image: np.ndarray, size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """((3, size, size) normalised, padded image, (h, w) unpadded size)."""
    h, w = valid_size(image.shape[0], image.shape[1], size)
    # resized in uint8, as ResizeLongestSide.apply_image resizes with PIL: the pixels the authors'
    # SAM sees (torch's uint8 antialiased bilinear is PIL's; a float resize differs by ~0.3 grey level)
    x = F.interpolate(_rgb(image), size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    x = x[0].float()
    x = (x - torch.tensor(SAM_MEAN)[:, None, None]) / torch.tensor(SAM_STD)[:, None, None]
    return F.pad(x, (0, size - w, 0, size - h)), (h, w)


def frame_masks(masks: torch.Tensor, size: int) -> torch.Tensor:
    """(n, H, W) bool masks -> (n, size, size) in SAM's frame (nearest, zero padding)."""
    h, w = valid_size(masks.shape[-2], masks.shape[-1], size)
    if len(masks) == 0:
        return torch.zeros(0, size, size, dtype=torch.bool)
    resized = F.interpolate(masks[:, None].float(), size=(h, w), mode="nearest")[:, 0] > 0.5
    return F.pad(resized, (0, size - w, 0, size - h))


def frame_labels(label: np.ndarray, size: int, ignore_index: int = 255) -> torch.Tensor:
    """(H, W) integer label map -> (size, size) long in SAM's frame, padding = ignore_index."""
    h, w = valid_size(label.shape[0], label.shape[1], size)
    x = torch.from_numpy(label.astype(np.int64))[None, None].float()
    x = F.interpolate(x, size=(h, w), mode="nearest")[0, 0].long()
    return F.pad(x, (0, size - w, 0, size - h), value=ignore_index)


def logits_at_original(logits: torch.Tensor, valid_size, size) -> torch.Tensor:
    """(n, S, S) mask logits in SAM's padded frame -> (n, H, W) float logits at the image's
    resolution: the unpadded (h, w) crop upsampled bilinearly to `size` (H, W), as
    segment-anything's postprocess_masks does (LISA computes its mask losses on these)."""
    h, w = (int(x) for x in valid_size)
    size = tuple(int(s) for s in size)
    if len(logits) == 0:
        return logits.new_zeros(0, *size, dtype=torch.float32)
    return F.interpolate(logits[:, None, :h, :w].float(), size=size, mode="bilinear", align_corners=False)[:, 0]


def to_original(logits: torch.Tensor, valid_size, size) -> torch.Tensor:
    """(n, S, S) mask logits in SAM's padded frame -> (n, H, W) bool at the image's resolution:
    logits_at_original > 0, as LISA's evaluation thresholds them."""
    return logits_at_original(logits, valid_size, size) > 0


def score_at_original(meter, logits: list, batch: dict) -> None:
    """Updates an IoUMeter with each sample's mask logits (n_b, S, S) in SAM's frame, mapped back
    to the image's resolution, against batch["original_masks"] (n_b, H, W), the pixels of
    batch["original_ignore"] (H, W) left out: how LISA's ValDataset and validate count IoU (not in
    the frame, which would change cIoU's per-image weights)."""
    if "original_masks" not in batch or "original_ignore" not in batch:
        raise ValueError(
            "evaluation batches need original_masks and original_ignore (the eval split of "
            "seg-conversations, seg-queries and referring carries them)"
        )
    for b, pred in enumerate(logits):
        target = batch["original_masks"][b]
        meter.update(
            to_original(pred, batch["valid_size"][b], target.shape[-2:]).to(target.device),
            target.bool(),
            ignore=batch["original_ignore"][b].bool(),
        )


def clip_input(image: np.ndarray, size: int) -> torch.Tensor:
    """(3, size, size) CLIP-normalised: the shorter side resized to `size` (bicubic), then the
    centre crop, as transformers' CLIPImageProcessor prepares an image. Every system's authors
    call that processor directly (LISA's and LaSagnA's datasets and chat.py, SegLLM's and LLM-Seg's
    loaders; LLaVASeg's MLLM through transformers): a wide image loses its sides to the CLIP tower,
    and SAM's frame keeps them."""
    h, w = image.shape[:2]
    nh, nw = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
    x = F.interpolate(_rgb(image).float() / 255, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)[0]
    top, left = (nh - size) // 2, (nw - size) // 2
    x = x[:, top : top + size, left : left + size]
    return (x.clamp(0, 1) - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None]


def model_inputs(image: np.ndarray, sam_size: int, clip_size: int) -> dict:
    frame, valid = sam_frame(image, sam_size)
    return {"image": frame, "valid_size": torch.tensor(valid), "clip_image": clip_input(image, clip_size)}
