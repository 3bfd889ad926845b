"""LaSagnA's model.options: LISA's, with its own answer tokens and chunking."""

from dataclasses import dataclass

from segfast.config import option
from segfast.models.lisa.options import LISAOptions
from segfast.text.lasagna import NEG, SEG


@dataclass
class LaSagnAOptions(LISAOptions):
    seg_token: str = option(SEG, "LaSagnA §3.2: a present class answers <SEG>")
    neg_token: str = option(NEG, "LaSagnA §3.2: an absent class answers <NEG>")
    chunk_size: int = option(20, "ours: classes asked per question at inference")
    max_new_tokens: int = option(96, "ours: room for a chunk's answers")
