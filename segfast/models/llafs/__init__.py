"""LLaFS (Zhu et al., "LLaFS: When Large Language Models Meet Few-Shot Segmentation").

model.py assembles the system (encoder.py: CLIP's ResNet-50; qformer.py: BLIP-2's Q-Former with
its text input and the fully-connected layer; the LLM; refine.py) with its losses and inference;
answer.py and prompts.py hold the text side (the paper's instructions), matching.py the Hungarian
matching behind L_llm, scoring.py the few-shot protocol's scoring at the labels' size. Ground-truth
polygons come from segfast.ops.mask_to_polar_polygons, L_ref is segfast.ops.ohem_cross_entropy;
the data are segfast.data.llafs_captions (stage 1), segfast.data.llafs_pseudo (stage 2) and
segfast.data.fewshot (PASCAL-5i / COCO-20i, stage 3); the jobs are segfast.jobs.fewshot_eval
(`segfast llafs-eval`) and segfast.jobs.llafs_tables (`segfast llafs-tables`, the fine-grained
instruction's region-attribute tables).

Departures from the paper, each an option off in its configuration (LLaFSOptions):
  similarity_prior      PFENet's support-similarity prior added to the query's Q-Former memory
                        and the refinement's input
  support_mask_embed    a learned embedding added to the support features inside the mask
  memory_position       a 2-D sine position added to the Q-Former's memory
  refine_polygon_input  the polygon mask also concatenated to the pixel decoder's input
  coordinate_init=sine  the coordinate tokens' embeddings start from a sine code of their value
The built-in demo (segfast.demo) turns on memory_position and coordinate_init=sine and says why.
What the paper leaves open and segfast chooses (option sources say "ours"): the refinement's
query count, the random-resize range, the answer's token limit (max_objects), the stage-1
objective (BLIP-2's generative one; its representation stage comes with a public BLIP-2 Q-Former).
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
