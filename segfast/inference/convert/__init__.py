"""Converters of the authors' released checkpoints into segfast checkpoints (`segfast convert
--system NAME --from DIR --out DIR`): one module per release layout, each reading the weights as
the authors' model code names them and reporting every key mapped, unused or missing."""

from segfast.inference.convert import llava_sam
from segfast.inference.convert.report import REPORT, ConversionError, Report

# system -> convert(system, source, out, clip=None) -> Report
CONVERTERS = {"lisa": llava_sam.convert, "lasagna": llava_sam.convert}
# why the other systems' releases do not convert (read from the authors' model code)
UNSUPPORTED = {
    "segllm": "berkeley-hipie/segllm's release pairs its LLaVA with a HIPIE (MaskDINO) segmentator and a "
    "Linear(4, hidden) mask-box encoder (mask_enc_head); segfast's SegLLM decodes with LISA's SAM and encodes "
    "masks with CLIP, so only the LLaVA part would map",
    "llm-seg": "wangjunchi/LLMSeg's LLaVA reads CLIP images and scores proposals with lisa_dino_conv, two-way "
    "blocks, lisa_iou_head (256-128-1) and lisa_embedding_head (256-2048-256); segfast's llm-seg feeds DINOv2 "
    "tokens to the LLM and has an IoP head 256-64-1, so the weights do not map one to one",
    "llafs": "the authors released no code or weights",
    "llavaseg": "the authors released no code or weights",
}


def convert(system: str, source, out, clip=None) -> Report:
    if system in UNSUPPORTED:
        raise ValueError(f"--system: {system}'s release cannot be converted: {UNSUPPORTED[system]}")
    if system not in CONVERTERS:
        raise ValueError(f"--system: no converter for {system!r} (known: {', '.join(CONVERTERS)})")
    return CONVERTERS[system](system, source, out, clip=clip)


__all__ = ["convert", "CONVERTERS", "ConversionError", "Report", "REPORT"]
