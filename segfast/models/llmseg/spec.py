from segfast.models.llmseg.model import LLMSeg
from segfast.models.llmseg.options import LLMSegOptions
from segfast.registry import System, register
from segfast.text.tokens import SEG

register(
    System(
        "llm-seg",
        LLMSeg,
        LLMSegOptions,
        datasets=("referring",),
        special_tokens=(SEG,),
        jobs=("proposals", "llmseg40k"),
        summary="LLM-Seg: the LLM's [SEG] token chooses among SAM's everything-mode proposals",
    )
)
