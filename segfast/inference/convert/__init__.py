"""Converters of the authors' released checkpoints into segfast checkpoints (`segfast convert
--system NAME --from DIR --out DIR`): one module per release layout, each reading the weights as
the authors' model code names them and reporting every key mapped, unused or missing."""

from segfast.inference.convert import llava_sam, llmseg
from segfast.inference.convert.report import REPORT, ConversionError, Report

# system -> convert(system, source, out, **paths) -> Report, and the paths (CLI flags) it reads
CONVERTERS = {"lisa": llava_sam.convert, "lasagna": llava_sam.convert, "llm-seg": llmseg.convert}
PATHS = {"lisa": ("clip",), "lasagna": ("clip",), "llm-seg": ("clip", "llava", "dinov2")}
# why the other systems' releases do not convert (read from the authors' model code)
UNSUPPORTED = {
    "segllm": "berkeley-hipie/segllm's release pairs its LLaVA with a HIPIE (MaskDINO) segmentator and a "
    "Linear(4, hidden) mask-box encoder (mask_enc_head); segfast's SegLLM decodes with LISA's SAM and encodes "
    "masks with CLIP, so only the LLaVA part would map",
    "llafs": "the authors released no code or weights",
    "llavaseg": "the authors released no code or weights",
}


def convert(system: str, source, out, **paths) -> Report:
    """paths: clip, llava, dinov2 (None: not given); a path the system's converter does not read
    is refused."""
    if system in UNSUPPORTED:
        raise ValueError(f"--system: {system}'s release cannot be converted: {UNSUPPORTED[system]}")
    if system not in CONVERTERS:
        raise ValueError(f"--system: no converter for {system!r} (known: {', '.join(CONVERTERS)})")
    given = {k: v for k, v in paths.items() if v is not None}
    unread = sorted(set(given) - set(PATHS[system]))
    if unread:
        raise ValueError(f"--{unread[0]}: {system}'s converter does not read it (it reads {', '.join(PATHS[system])})")
    return CONVERTERS[system](system, source, out, **given)


__all__ = ["convert", "CONVERTERS", "ConversionError", "Report", "REPORT"]
