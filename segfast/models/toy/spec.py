from segfast.models.toy.model import ToyLLM, ToyOptions
from segfast.registry import System, register

register(
    System(
        "toy-llm",
        ToyLLM,
        ToyOptions,
        datasets=("toy-tokens",),
        summary="a tiny causal LM with LoRA on synthetic tokens: the engine's built-in default",
    )
)
