"""LLaFS (Zhu et al., "LLaFS: When Large Language Models Meet Few-Shot Segmentation").

Built so far: the answer format and its parser (answer.py), the bipartite matching behind L_llm
(matching.py) and the refinement network (refine.py); ground-truth polygons come from
segfast.ops.mask_to_polar_polygons and L_ref is segfast.ops.ohem_cross_entropy. The pseudo-sample
generator, the encoder + Q-Former + LLM assembly, the episode loaders and the demo are still to
come (see the project's issue tracker).
"""

from segfast.models.llafs.answer import (COORDINATE_BINS, AnswerError, coordinate_tokens, format_answer,
                                         parse_answer)
from segfast.models.llafs.matching import linear_assignment, match_polygons, reorder_ground_truth
from segfast.models.llafs.refine import RefinementNetwork

__all__ = ["COORDINATE_BINS", "AnswerError", "coordinate_tokens", "format_answer", "parse_answer",
           "linear_assignment", "match_polygons", "reorder_ground_truth", "RefinementNetwork"]
