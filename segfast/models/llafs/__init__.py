"""LLaFS (Zhu et al., "LLaFS: When Large Language Models Meet Few-Shot Segmentation").

Built so far: the answer format and its parser (answer.py); ground-truth polygons come from
segfast.ops.mask_to_polar_polygons. The pseudo-sample generator, model, losses, data and demo
are still to come (see the project's issue tracker).
"""

from segfast.models.llafs.answer import (COORDINATE_BINS, AnswerError, coordinate_tokens, format_answer,
                                         parse_answer)

__all__ = ["COORDINATE_BINS", "AnswerError", "coordinate_tokens", "format_answer", "parse_answer"]
