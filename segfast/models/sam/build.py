"""Building and loading segment-anything models.

Real checkpoints load through segment-anything's own registry
(`sam_model_registry[model_type](checkpoint=path)`); "tiny" builds a small SAM from the same
building blocks (ViT encoder, prompt encoder, two-way mask decoder) for tests and CPU runs,
loading a state dict when given one.
"""

from functools import partial
from pathlib import Path

import torch

from segfast.io import save_torch


def _segment_anything():
    try:
        import segment_anything
    except ImportError as e:  # torchvision is what usually fails underneath
        raise ImportError(
            "segfast.models.sam needs segment-anything (pip install segment-anything; it imports "
            f"torchvision, which must match your torch): {e}"
        ) from e
    return segment_anything


def tiny_sam(checkpoint: str | Path | None = None, *, image_size: int = 256, dim: int = 32, seed: int = 0):
    """A small random SAM: image_size input, 16-pixel patches, dim-wide encoder and decoder."""
    sa = _segment_anything()
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, TwoWayTransformer

    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    grid = image_size // 16
    sam = sa.modeling.Sam(
        image_encoder=ImageEncoderViT(
            img_size=image_size,
            patch_size=16,
            embed_dim=dim,
            depth=2,
            num_heads=2,
            mlp_ratio=2,
            out_chans=dim,
            qkv_bias=True,
            use_rel_pos=True,
            window_size=4,
            global_attn_indexes=(1,),
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=dim, image_embedding_size=(grid, grid), input_image_size=(image_size, image_size), mask_in_chans=4
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer_dim=dim,
            iou_head_depth=3,
            iou_head_hidden_dim=dim,
            transformer=TwoWayTransformer(depth=2, embedding_dim=dim, mlp_dim=2 * dim, num_heads=2),
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    torch.random.set_rng_state(generator_state)
    if checkpoint is not None:
        sam.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    return sam.eval()


def load_sam(model_type: str, checkpoint: str | Path | None, device: str | torch.device = "cpu"):
    """A segment-anything Sam in eval mode on `device`. model_type: vit_h, vit_l, vit_b, default
    (segment-anything's registry) or tiny. checkpoint None gives random weights (benchmarks)."""
    sa = _segment_anything()
    builders = dict(sa.sam_model_registry, tiny=tiny_sam)
    if model_type not in builders:
        raise ValueError(f"model_type must be one of {', '.join(sorted(builders))}, got {model_type!r}")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint: no SAM checkpoint at {checkpoint}")
    return builders[model_type](checkpoint=None if checkpoint is None else str(checkpoint)).to(device).eval()


def save_sam(sam, path: str | Path) -> Path:
    """The model's state dict, written atomically (what load_sam reads back)."""
    return save_torch(sam.state_dict(), path)
