"""segment-anything (SAM) support: loading, everything-mode proposals."""

from segfast.models.sam.build import load_sam, save_sam, tiny_sam
from segfast.models.sam.proposals import ProposalGenerator, Proposals

__all__ = ["load_sam", "save_sam", "tiny_sam", "ProposalGenerator", "Proposals"]
