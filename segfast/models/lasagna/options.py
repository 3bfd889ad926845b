"""LaSagnA's model.options: LISA's, with its own answer tokens, loss weights and inference."""

from dataclasses import dataclass

from segfast.config import option
from segfast.models.lisa.options import LISAOptions
from segfast.text.lasagna import NEG, SEG


@dataclass
class LaSagnAOptions(LISAOptions):
    seg_token: str = option(SEG, "LaSagnA §3.3: a present class answers <SEG>")
    neg_token: str = option(NEG, "LaSagnA §3.4: an absent class answers <NEG>")
    lambda_bce: float = option(1.0, "LaSagnA §4.1 (λ_bce 1.0; the released train_ds.py defaults to 2.0: set 2.0)")
    lambda_dice: float = option(0.5, "LaSagnA §4.1")
    chunk_size: int = option(
        0, "LaSagnA Table 6: every class in one question (0; N gives 42.0 mIoU vs 31.0 at N/4); k > 0: k per question"
    )
    unlabelled_as_first_class: bool = option(
        True,
        "authors' test_sem.py, which scored the paper's tables: argmax of one-hot maps (utils/miou/iou.py), so a pixel "
        "no class fires and an unlabelled target pixel both count as class 0; off: both left out (standard mIoU)",
    )
