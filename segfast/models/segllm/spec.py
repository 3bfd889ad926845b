from segfast.models.segllm.model import SegLLM
from segfast.models.segllm.options import SegLLMOptions
from segfast.registry import System, register
from segfast.text.tokens import REF, SEG

register(
    System(
        "segllm",
        SegLLM,
        SegLLMOptions,
        datasets=("multiround",),
        special_tokens=(SEG, REF),
        summary="SegLLM: multi-round segmentation with mask memory and [REF] decoding",
    )
)
