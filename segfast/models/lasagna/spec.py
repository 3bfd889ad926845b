from segfast.models.lasagna.model import LaSagnA
from segfast.models.lasagna.options import LaSagnAOptions
from segfast.registry import System, register
from segfast.text.lasagna import NEG, SEG

register(
    System(
        "lasagna",
        LaSagnA,
        LaSagnAOptions,
        datasets=("semantic-queries", "mixture"),
        special_tokens=(SEG, NEG),
        summary="LaSagnA: many and absent targets per query (<SEG> / <NEG> per asked class)",
    )
)
