from segfast.models.llafs.model import LLaFS
from segfast.models.llafs.options import LLaFSOptions
from segfast.models.llafs.prompts import special_tokens
from segfast.registry import System, register

register(
    System(
        "llafs",
        LLaFS,
        LLaFSOptions,
        datasets=("llafs-captions", "llafs-pseudo", "fewshot"),
        special_tokens=tuple(special_tokens()),
        jobs=("llafs-eval", "llafs-tables"),
        summary="LLaFS: the LLM writes 16-point polygons, rasterized and refined (few-shot)",
    )
)
