"""SegLLM's model.options: LISA's fields with SegLLM's values, and the mask memory's."""

from dataclasses import dataclass

from segfast.config import option
from segfast.models.lisa.options import LISAOptions
from segfast.text.segllm import SYSTEM


@dataclass
class SegLLMOptions(LISAOptions):
    lambda_bce: float = option(1.0, "SegLLM eq. 1: L_seg = L_ce + λ L_DICE (LISA's 2.0 is an option)")
    lambda_dice: float = option(1.0, "SegLLM §4.2: λ = 1 (LISA's 0.5 is an option)")
    reference_loss: bool = option(True, "SegLLM eq. 1: the ([REF], [PAD]) reference mask is supervised (Table 8)")
    slot_embedding: str = option(
        "add",
        "authors' code (llava_llama.py:181-191: the encoding is added to its <video> token's embedding; the zeroing "
        "at :189 writes into a copy); replace: the encoding alone (ours)",
    )
    seg_activation: str = option(
        "gelu",
        "authors' code (segmentator_predictor = build_vision_predictor, mlp2x_gelu: Linear, GELU, Linear; "
        "multimodal_projector/builder.py); relu: LISA's text_hidden_fcs",
    )
    loss_rounds: int = option(
        2,
        "authors' code (segmentator/hipie.yaml max_rounds: 2; hipie_utils.py segment_mask keeps that many random "
        "masks of a conversation, with their references, for the mask loss in training); 0: every round",
    )
    query_l2: float = option(
        1e-3,
        "authors' code (hipie.yaml sparse_embed_L2_loss_weight; hipie_utils.py:348 adds it times the mean square "
        "of the kept masks' decoder prompts to the loss); 0: off",
    )
    mask_encoding: bool = option(True, "SegLLM §4.2 mask embedding (off: Table 8's ablation)")
    box_encoding: bool = option(True, "SegLLM §4.2 box embedding (off: Table 8's ablation)")
    seg_memory: bool = option(
        True, "SegLLM §A.3: each mask's encoding follows its [SEG] (off: only the question slots, authors' code)"
    )
    train_after_seg: bool = option(
        True, "ours: the position after [SEG] learns the next text token, so free generation continues"
    )
    train_mask_decoder: bool = option(
        False, "SegLLM §5.1: the mask decoder (HIPIE-R50 there, SAM here) stays frozen (LISA trains it)"
    )
    train_projector: bool = option(True, "SegLLM §5.1: the LLM and the projector f_V2L are fine-tuned")
    mask_clip: str = option(
        "llava",
        "authors' code (llava_llama.py:102 encode_images(crops, features='cls')): LLaVA's CLIP tower, CLS of its "
        "selected layer, through LLaVA's projector; separate: ours, a second CLIP (clip_path) pooled through a new MLP",
    )
    clip_path: str = option("", "mask_clip separate: a local CLIP vision model (empty: tiny random from `clip`)")
    clip: dict = option({}, "ours: tiny CLIP vision fields when mask_clip is separate and clip_path empty")
    encoding_dropout: float = option(
        0.5,
        "authors' code (llava_llama.py process_extra_replacement_data: in training each mask and box "
        "embedding is zeroed with probability 0.5, in evaluation multiplied by 0.5); 0: off (ours)",
    )
    box_embedding: str = option(
        "linear",
        "authors' code (llava_arch.py mask_enc_head = nn.Linear(4, hidden) on train.py's [row0, col0, row1, "
        "col1] / 1024); fourier: ours, sin/cos features first (§A.3 says only 'a positional embedding')",
    )
    fourier_bands: int = option(8, "ours: Fourier bands of box_embedding 'fourier'")
    max_rounds: int = option(20, "ours: rounds the per-round meters report (MRSeg has up to 19, Table A1)")
    system: str = option(
        SYSTEM, "authors' code: train.py preprocess_plain_gen uses conv_templates['vicuna_v1'] (empty: none)"
    )
    loss_resolution: str = option("frame", "ours: SegLLM's masks live in SAM's frame (its data have no original_masks)")
