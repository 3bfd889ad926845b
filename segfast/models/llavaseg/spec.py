from segfast.models.llavaseg.model import LLaVASeg
from segfast.models.llavaseg.options import LLaVASegOptions
from segfast.registry import System, register

register(
    System(
        "llavaseg",
        LLaVASeg,
        LLaVASegOptions,
        datasets=("seg-queries", "mixture"),
        jobs=("cot-cache",),
        # the MLLM stays frozen (no LoRA); AdamW at 1e-4 with weight decay 1e-4, batch 160, 12,000
        # iterations (LLaVASeg §4.1)
        config_defaults={
            "model": {"lora": {"enabled": False}},
            "optim": {"lr": 1e-4, "weight_decay": 1e-4},
            "run": {"global_batch_size": 160, "total_steps": 12000},
        },
        summary="LLaVASeg: chain-of-thought prompts of a frozen MLLM, language-aware SAM adapters",
    )
)
