"""SAM everything mode, batched and post-processed on the device.

ProposalGenerator keeps segment-anything's SamAutomaticMaskGenerator semantics and settings
(point grids, pred_iou_thresh, stability score with offset, box NMS, crop layers with crop
NMS, min region area) and returns the same masks in the same order. What changes is where the
time goes:

  * the image encoder runs on a batch of images (and their crops) at once;
  * the predicted-IoU filter runs on the low-resolution logits, before upsampling (it does not
    depend on the mask), so rejected masks are never upsampled;
  * stability score, thresholding, uncropping, box extraction and bit packing are one fused
    kernel (segfast.ops.binarize_logits) that reads each upsampled logit once and writes
    packed bits instead of several passes over full-resolution float and bool masks;
  * masks stay packed on the device; RLE is a compiled op over all masks (segfast.ops.rle_encode)
    instead of a Python loop per mask.

min_mask_region_area > 0 (off by default, as in SAM) uses segment-anything's own per-mask
OpenCV clean-up: the one CPU loop left, kept so the results stay identical.
"""

from dataclasses import dataclass, replace

import numpy as np
import torch

from segfast.ops.binarize import binarize_logits
from segfast.ops.packing import pack_masks, unpack_masks
from segfast.ops.rle import rle_encode

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle", "packed")


@dataclass
class Proposals:
    """One image's masks, in SamAutomaticMaskGenerator's order."""

    packed: torch.Tensor  # (N, H, 8 * ceil(W / 64)) uint8
    size: tuple  # (H, W)
    boxes: torch.Tensor  # (N, 4) int64 XYXY, inclusive
    area: torch.Tensor  # (N,) int64
    iou_preds: torch.Tensor  # (N,) float32
    stability: torch.Tensor  # (N,) float32
    points: torch.Tensor  # (N, 2) float64, the prompt (x, y) in image pixels
    crop_boxes: torch.Tensor  # (N, 4) int64 XYXY

    def __len__(self) -> int:
        return self.packed.shape[0]

    def select(self, index) -> "Proposals":
        fields = ("packed", "boxes", "area", "iou_preds", "stability", "points", "crop_boxes")
        return replace(self, **{f: getattr(self, f)[index.to(getattr(self, f).device)] for f in fields})

    def top_k_by_area(self, k: int) -> "Proposals":
        """The k largest masks, largest first (what LLM-Seg keeps per image); ties keep order."""
        order = torch.sort(self.area, descending=True, stable=True).indices[:k]
        return self.select(order)

    def masks(self) -> torch.Tensor:
        return unpack_masks(self.packed, self.size[1])

    def rles(self, compress: bool = True) -> list:
        return rle_encode(self.packed, self.size[1], compress=compress)

    def records(self, output_mode: str = "binary_mask") -> list:
        """SamAutomaticMaskGenerator.generate's list of dicts, field for field."""
        if output_mode not in OUTPUT_MODES[:3]:
            raise ValueError(f"output_mode must be one of {', '.join(OUTPUT_MODES[:3])}, got {output_mode!r}")
        if output_mode == "binary_mask":
            segmentations = list(self.masks().cpu().numpy())
        else:
            segmentations = self.rles(compress=output_mode == "coco_rle")
        xywh = _xywh(self.boxes).cpu().tolist()
        crops = _xywh(self.crop_boxes).cpu().tolist()
        area, iou, stab = self.area.tolist(), self.iou_preds.tolist(), self.stability.tolist()
        points = self.points.cpu().tolist()
        return [
            {
                "segmentation": s,
                "area": area[i],
                "bbox": xywh[i],
                "predicted_iou": iou[i],
                "point_coords": [points[i]],
                "stability_score": stab[i],
                "crop_box": crops[i],
            }
            for i, s in enumerate(segmentations)
        ]


def _xywh(boxes: torch.Tensor) -> torch.Tensor:
    return torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1)


def _cat(parts: list, like: Proposals) -> Proposals:
    fields = ("packed", "boxes", "area", "iou_preds", "stability", "points", "crop_boxes")
    return replace(like, **{f: torch.cat([getattr(p, f) for p in parts]) for f in fields})


class ProposalGenerator:
    """SamAutomaticMaskGenerator's masks, faster. Same arguments and defaults, plus
    image_batch: images (or crops) per image-encoder call. With 1 (the default) every number
    equals segment-anything's; larger batches change the order of the encoder's float sums, so
    scores can differ in the last bits (and a mask whose score sits at a threshold can flip).
    A ViT-H encoder fills a GPU at batch 1; batching pays for small encoders."""

    def __init__(
        self,
        model,
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: list | None = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
        image_batch: int = 1,
    ):
        from segment_anything.utils.amg import build_all_layer_point_grids
        from segment_anything.utils.transforms import ResizeLongestSide

        if (points_per_side is None) == (point_grids is None):
            raise ValueError("give exactly one of points_per_side and point_grids")
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {', '.join(OUTPUT_MODES)}, got {output_mode!r}")
        for name, value in (("points_per_batch", points_per_batch), ("image_batch", image_batch)):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.model = model
        self.point_grids = (
            point_grids
            if point_grids is not None
            else build_all_layer_point_grids(points_per_side, crop_n_layers, crop_n_points_downscale_factor)
        )
        if len(self.point_grids) < crop_n_layers + 1:
            raise ValueError(
                f"point_grids needs one grid per crop layer ({crop_n_layers + 1}), got {len(self.point_grids)}"
            )
        self.transform = ResizeLongestSide(model.image_encoder.img_size)
        self.points_per_batch, self.image_batch = int(points_per_batch), int(image_batch)
        self.pred_iou_thresh, self.stability_score_thresh = pred_iou_thresh, stability_score_thresh
        self.stability_score_offset, self.box_nms_thresh = stability_score_offset, box_nms_thresh
        self.crop_n_layers, self.crop_nms_thresh = crop_n_layers, crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.min_mask_region_area, self.output_mode = min_mask_region_area, output_mode

    @property
    def device(self) -> torch.device:
        return self.model.device

    def generate(self, image: np.ndarray):
        """One HWC uint8 RGB image -> SamAutomaticMaskGenerator.generate's records (or Proposals
        with output_mode="packed")."""
        proposals = self.generate_batch([image])[0]
        return proposals if self.output_mode == "packed" else proposals.records(self.output_mode)

    @torch.no_grad()
    def generate_batch(self, images: list) -> list:
        """HWC uint8 RGB images (any sizes) -> one Proposals per image."""
        from segment_anything.utils.amg import generate_crop_boxes

        jobs = []  # (image index, crop box, crop layer)
        for i, image in enumerate(images):
            if not (
                isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
            ):
                raise ValueError(
                    f"images[{i}] must be an HWC uint8 RGB numpy array, got "
                    f"{getattr(image, 'dtype', type(image))} of shape {getattr(image, 'shape', None)}"
                )
            boxes, layers = generate_crop_boxes(image.shape[:2], self.crop_n_layers, self.crop_overlap_ratio)
            jobs += [(i, box, layer) for box, layer in zip(boxes, layers)]
        per_image = [[] for _ in images]
        for start in range(0, len(jobs), self.image_batch):
            chunk = jobs[start : start + self.image_batch]
            crops = [images[i][y0:y1, x0:x1] for i, (x0, y0, x1, y1), _ in chunk]
            inputs = [self._prepare(crop) for crop in crops]
            features = self.model.image_encoder(torch.cat([x for x, _ in inputs]))
            for j, (i, box, layer) in enumerate(chunk):
                per_image[i].append(
                    self._process_crop(
                        features[j : j + 1], inputs[j][1], crops[j].shape[:2], box, layer, images[i].shape[:2]
                    )
                )
        return [self._merge(parts) for parts in per_image]

    def _prepare(self, crop: np.ndarray):
        """segment-anything's SamPredictor.set_image: resize longest side, normalise, pad."""
        resized = torch.as_tensor(self.transform.apply_image(crop), device=self.device)
        resized = resized.permute(2, 0, 1).contiguous()[None]
        return self.model.preprocess(resized), tuple(resized.shape[-2:])

    def _process_crop(self, features, input_size, crop_size, crop_box, layer, image_size) -> Proposals:
        from torchvision.ops.boxes import batched_nms

        x0, y0 = crop_box[:2]
        points = self.point_grids[layer] * np.array(crop_size)[None, ::-1]
        parts = [
            self._process_batch(
                features, points[s : s + self.points_per_batch], input_size, crop_size, crop_box, image_size
            )
            for s in range(0, len(points), self.points_per_batch)
        ]
        data = _cat(parts, parts[0])
        keep = batched_nms(data.boxes.float(), data.iou_preds, torch.zeros(len(data)), self.box_nms_thresh)
        data = data.select(keep)
        data.points = data.points + torch.tensor([[x0, y0]], dtype=data.points.dtype)
        return data

    def _process_batch(self, features, points, input_size, crop_size, crop_box, image_size) -> Proposals:
        model = self.model
        coords = torch.as_tensor(self.transform.apply_coords(points, crop_size), device=self.device)
        labels = torch.ones(coords.shape[0], dtype=torch.int, device=self.device)
        sparse, dense = model.prompt_encoder(points=(coords[:, None, :], labels[:, None]), boxes=None, masks=None)
        low_res, iou_preds = model.mask_decoder(
            image_embeddings=features,
            image_pe=model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,
        )
        low_res, iou_preds = low_res.flatten(0, 1), iou_preds.flatten(0, 1)
        points = torch.as_tensor(points.repeat(3, axis=0))
        if self.pred_iou_thresh > 0.0:  # before upsampling: the predicted IoU does not depend on it
            keep = (iou_preds > self.pred_iou_thresh).nonzero()[:, 0]
            low_res, iou_preds, points = low_res[keep], iou_preds[keep], points[keep.cpu()]
        logits = model.postprocess_masks(low_res[:, None], input_size, crop_size)[:, 0]
        x0, y0 = crop_box[:2]
        out = binarize_logits(
            logits.float(),
            model.mask_threshold,
            stability_offset=self.stability_score_offset,
            canvas=image_size,
            origin=(y0, x0),
        )
        # segment-anything boxes an empty mask as (0, 0, 0, 0) in the crop and uncrops it to the
        # crop's corner, where is_box_near_crop_edge then drops it unless the corner is near the image's
        empty = out.area == 0
        if bool(empty.any()):
            corner = torch.tensor([x0, y0, x0, y0], dtype=out.boxes.dtype, device=out.boxes.device)
            out.boxes[empty] = corner
        keep = torch.ones(len(logits), dtype=torch.bool, device=logits.device)
        if self.stability_score_thresh > 0.0:
            keep &= out.stability >= self.stability_score_thresh
        keep &= ~_near_crop_edge(out.boxes, crop_box, image_size)
        keep = keep.nonzero()[:, 0]
        crop_boxes = torch.tensor([crop_box], device=logits.device).expand(len(keep), 4)
        return Proposals(
            out.packed[keep],
            tuple(image_size),
            out.boxes[keep],
            out.area[keep],
            iou_preds[keep],
            out.stability[keep],
            points[keep.cpu()],
            crop_boxes,
        )

    def _merge(self, parts: list) -> Proposals:
        from torchvision.ops.boxes import batched_nms, box_area

        data = _cat(parts, parts[0])
        if len(parts) > 1 and len(data):
            scores = (1 / box_area(data.crop_boxes)).to(data.boxes.device)
            keep = batched_nms(data.boxes.float(), scores, torch.zeros(len(data)), self.crop_nms_thresh)
            data = data.select(keep)
        if self.min_mask_region_area > 0 and len(data):
            data = self._remove_small_regions(data)
        return data

    def _remove_small_regions(self, data: Proposals) -> Proposals:
        """segment-anything's postprocess_small_regions on the packed masks."""
        from segment_anything.utils.amg import batched_mask_to_box, remove_small_regions
        from torchvision.ops.boxes import batched_nms

        cleaned, scores = [], []
        for mask in data.masks().cpu().numpy():
            mask, holes = remove_small_regions(mask, self.min_mask_region_area, mode="holes")
            mask, islands = remove_small_regions(mask, self.min_mask_region_area, mode="islands")
            cleaned.append(torch.as_tensor(mask))
            scores.append(float(not (holes or islands)))
        masks = torch.stack(cleaned)
        boxes = batched_mask_to_box(masks)
        keep = batched_nms(
            boxes.float(),
            torch.as_tensor(scores),
            torch.zeros(len(boxes)),
            max(self.box_nms_thresh, self.crop_nms_thresh),
        )
        changed = torch.as_tensor(scores) == 0.0
        device = data.packed.device
        packed = torch.where(changed.to(device)[:, None, None], pack_masks(masks.to(device)), data.packed)
        data = replace(
            data,
            packed=packed,
            boxes=torch.where(changed[:, None], boxes, data.boxes.cpu()).to(device),
            area=torch.where(changed, masks.sum((1, 2)), data.area.cpu()).to(device),
        )
        return data.select(keep)


def _near_crop_edge(boxes: torch.Tensor, crop_box, image_size, atol: float = 20.0) -> torch.Tensor:
    """segment-anything's is_box_near_crop_edge for boxes already in image coordinates."""
    crop = torch.as_tensor(crop_box, dtype=torch.float, device=boxes.device)
    image = torch.tensor([0, 0, image_size[1], image_size[0]], dtype=torch.float, device=boxes.device)
    boxes = boxes.float()
    near_crop = torch.isclose(boxes, crop[None], atol=atol, rtol=0)
    near_image = torch.isclose(boxes, image[None], atol=atol, rtol=0)
    return (near_crop & ~near_image).any(dim=1)
