"""Converters of the authors' released checkpoints into segfast checkpoints (`segfast convert
--system NAME --from DIR --out DIR`): one module per release layout, each reading the weights as
the authors' model code names them and reporting every key mapped, unused or missing."""

from segfast.inference.convert import llava_sam
from segfast.inference.convert.report import REPORT, ConversionError, Report

# system -> convert(system, source, out, clip=None) -> Report
CONVERTERS = {"lisa": llava_sam.convert, "lasagna": llava_sam.convert}


def convert(system: str, source, out, clip=None) -> Report:
    if system not in CONVERTERS:
        raise ValueError(f"--system: no converter for {system!r} (known: {', '.join(CONVERTERS)})")
    return CONVERTERS[system](system, source, out, clip=clip)


__all__ = ["convert", "CONVERTERS", "ConversionError", "Report", "REPORT"]
