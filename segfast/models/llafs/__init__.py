"""LLaFS (Zhu et al., "LLaFS: When Large Language Models Meet Few-Shot Segmentation").

model.py assembles the system (encoder.py, a BLIP-2 Q-Former, the LLM, refine.py) with its
losses and inference; answer.py and prompts.py hold the text side, matching.py the Hungarian
matching behind L_llm (the few-shot evaluation job: segfast.jobs.fewshot_eval). Ground-truth polygons come from
segfast.ops.mask_to_polar_polygons, L_ref is segfast.ops.ohem_cross_entropy, the data are
segfast.data.llafs_pseudo (pretraining) and segfast.data.fewshot (PASCAL-5i / COCO-20i).
"""

from segfast.models.llafs.answer import COORDINATE_BINS, AnswerError, coordinate_tokens, format_answer, parse_answer
from segfast.models.llafs.matching import linear_assignment, match_polygons, reorder_ground_truth
from segfast.models.llafs.model import LLaFS
from segfast.models.llafs.refine import RefinementNetwork

__all__ = [
    "COORDINATE_BINS",
    "AnswerError",
    "coordinate_tokens",
    "format_answer",
    "parse_answer",
    "linear_assignment",
    "match_polygons",
    "reorder_ground_truth",
    "RefinementNetwork",
    "LLaFS",
]
