"""LLaFS's model.options: the paper's values, each with its source."""

from dataclasses import dataclass

from segfast.config import option


@dataclass
class LLaFSOptions:
    image_size: int = option(384, "LLaFS Supp B: input 384 x 384")
    coordinate_bins: int = option(384, "LLaFS Supp A.4: 384 coordinate tokens, one per pixel at 384")
    num_vertices: int = option(
        16, "LLaFS §4.1: 16 rays at 22.5°; Fig. 5 ablates the number (data.options.num_vertices must match)"
    )
    encoder: str = option("clip-rn50", "LLaFS Supp B: CLIP's ResNet-50 (open_clip); resnet50 = torchvision's; tiny")
    encoder_path: str = option("", "the OpenAI RN50 checkpoint (RN50.pt) or a torchvision ResNet-50 state dict")
    encoder_widths: list = option([16, 32, 64, 64], "ours: the tiny encoder's stage widths")
    freeze_encoder: bool = option(True, "LLaFS §3.1: the image encoder is frozen")
    qformer: dict = option(
        {"hidden_size": 384, "num_hidden_layers": 8, "num_attention_heads": 6, "intermediate_size": 1536},
        "LLaFS Supp B: 8 layers of width 384 (heads of 64 and a 4x feed-forward as BLIP-2's)",
    )
    qformer_path: str = option(
        "", "a stage-1 checkpoint (checkpoints/step-N) or a BLIP-2 checkpoint directory (transformers format)"
    )
    qformer_text: bool = option(True, "LLaFS Supp B: the Q-Former's text input 'a photo of [class].'")
    qformer_tokenizer: str = option("", "a BERT tokenizer directory (BLIP-2's); empty: a word tokenizer")
    stage: str = option("segmentation", "LLaFS §4.1: qformer (stage 1) | segmentation (stages 2-3)")
    freeze_qformer: bool = option(True, "LLaFS §4.1: the stage-1 Q-Former is frozen in stages 2-3")
    num_query_tokens: int = option(100, "LLaFS §4.1: 100 queries")
    llm: dict = option(
        {
            "hidden_size": 128,
            "intermediate_size": 256,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
            "max_position_embeddings": 2048,
        },
        "ours: tiny Llama fields when model.path is empty (the paper: CodeLlama-7B, §3.1)",
    )
    refine_dim: int = option(128, "LLaFS Supp B: feature dimension 128")
    refine_queries: int = option(100, "Mask2Former's 100 queries (LLaFS does not say)")
    refine_layers: int = option(3, "LLaFS Supp A.3: 3 attention layers (6 convolutions in the pixel decoder)")
    ohem_thresh: float = option(0.7, "mmseg OHEMPixelSampler default")
    ohem_min_kept: int = option(100000, "mmseg OHEMPixelSampler default")
    max_objects: int = option(20, "ours: the most objects an answer is generated for (token limit)")
    instruction: str = option("task", "LLaFS Table 4: task (§3.2.1) | abstract ('Perform image segmentation.')")
    with_support: bool = option(True, "LLaFS Table 2: the support images as in-context examples")
    refinement: bool = option(True, "LLaFS Table 4: the refinement network (False: the polygon is the mask)")
    fine_grained: bool = option(True, "LLaFS Tables 3-4: attributes and region tables when the data has them")
    coordinate_init: str = option(
        "mean", "LLaFS leaves it open: mean (transformers' resize) | sine (ours: a sine code of each token's value)"
    )
    # departures from the paper, off in its configuration (segfast.models.llafs lists them)
    similarity_prior: bool = option(False, "ours: PFENet's support-similarity prior for the query (not in LLaFS)")
    support_mask_embed: bool = option(False, "ours: a learned embedding added inside the support mask (not in LLaFS)")
    memory_position: bool = option(False, "ours: a 2-D sine position added to the Q-Former's memory (not in LLaFS)")
    refine_polygon_input: bool = option(
        False, "ours: the polygon mask also enters the pixel decoder (LLaFS: only masks attention)"
    )
