"""SAM as the [SEG]-token family uses it: the image encoder and prompt encoder frozen, the
two-way mask decoder trainable, prompted with sparse embeddings that come from the LLM."""

import torch
import torch.nn.functional as F
from torch import nn


def load_prompted_sam(sam_type: str, checkpoint: str, image_size: int):
    """A segment-anything Sam: the registry's vit_h/vit_l/vit_b from `checkpoint`, or tiny
    (image_size input; random when checkpoint is empty, else the saved tiny state dict)."""
    from segfast.models.sam.build import load_sam, tiny_sam

    if sam_type == "tiny":
        return tiny_sam(checkpoint or None, image_size=image_size)
    if not checkpoint:
        raise ValueError(f"sam_checkpoint is required for sam_type={sam_type!r} (a local segment-anything .pth)")
    return load_sam(sam_type, checkpoint)


class PromptedSam(nn.Module):
    def __init__(self, sam):
        super().__init__()
        self.sam = sam
        sam.image_encoder.requires_grad_(False)
        sam.prompt_encoder.requires_grad_(False)
        sam.mask_decoder.iou_prediction_head.requires_grad_(False)  # unused: one mask per prompt

    @property
    def image_size(self) -> int:
        return self.sam.image_encoder.img_size

    @property
    def dim(self) -> int:
        return self.sam.prompt_encoder.embed_dim

    def train(self, mode: bool = True):
        super().train(mode)
        self.sam.image_encoder.eval()  # frozen: no dropout, ever
        return self

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) image embeddings of SAM-normalised, padded (B, 3, S, S) images."""
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            raise ValueError(
                f"image: SAM expects {self.image_size}x{self.image_size} inputs, got "
                f"{tuple(images.shape[-2:])}; set the dataset's image_size to {self.image_size}"
            )
        with torch.no_grad():
            encoder = self.sam.image_encoder
            return encoder(images.to(next(encoder.parameters()).dtype))

    def decode(self, embedding: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """Mask logits (n, S, S) for n prompts of q tokens each (n, q, dim) on one image's
        embedding (C, h, w): single-mask output, upsampled to the input frame as SAM's
        postprocess_masks does (before its crop to the unpadded size)."""
        pe = self.sam.prompt_encoder
        sparse, dense = pe(points=None, boxes=None, masks=None)
        sparse = torch.cat([sparse.expand(len(queries), -1, -1), queries.to(sparse.dtype)], dim=1)
        low, _ = self.sam.mask_decoder(
            image_embeddings=embedding[None],
            image_pe=pe.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        size = (self.image_size, self.image_size)
        return F.interpolate(low.float(), size=size, mode="bilinear", align_corners=False)[:, 0]
