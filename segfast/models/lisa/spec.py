from segfast.models.lisa.model import LISA
from segfast.models.lisa.options import LISAOptions
from segfast.registry import System, register
from segfast.text.tokens import SEG

register(
    System(
        "lisa",
        LISA,
        LISAOptions,
        datasets=("seg-conversations", "mixture"),
        special_tokens=(SEG,),
        summary="LISA: a LLaVA answers with [SEG] tokens that prompt SAM's mask decoder",
    )
)
