from segfast.models.segllm.model import SegLLM
from segfast.models.segllm.options import SegLLMOptions
from segfast.registry import System, register
from segfast.text.segllm import BOX_SLOT, MASK_SLOT
from segfast.text.tokens import REF, SEG

register(
    System(
        "segllm",
        SegLLM,
        SegLLMOptions,
        datasets=("multiround", "mixture"),
        special_tokens=(SEG, REF, MASK_SLOT, BOX_SLOT),
        # §5.1 and §A.1: the LLM fine-tuned in full (LoRA is an option), AdamW at 2e-5, batch 16
        # (per-device 2); weight decay 0 and a cosine schedule as the authors' training scripts
        config_defaults={
            "model": {"lora": {"enabled": False}},
            "optim": {"lr": 2e-5, "weight_decay": 0.0, "schedule": "cosine"},
            "run": {"global_batch_size": 16, "micro_batch_size": 2},
        },
        summary="SegLLM: multi-round segmentation with mask memory and [REF] decoding",
    )
)
