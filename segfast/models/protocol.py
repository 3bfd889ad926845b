"""The model protocol every trainable segfast system implements.

A model is an nn.Module whose forward(batch) returns a dict of named, already-weighted losses
(the engine optimises their sum and logs each); parameters with requires_grad train. Optional
hooks let the engine do more:

    transformer_blocks() -> list[nn.Module]   units for FSDP2 sharding and activation checkpointing
    enable_gradient_checkpointing()           turn on activation checkpointing
    peft_model                                attribute: the PeftModel inside, if any, so LoRA
                                              adapters are saved in peft's own format
    count_tokens(batch) -> int                for tokens/s
    count_targets(batch) -> int               the target tokens of its token-mean loss; the
                                              engine then puts the global batch's per-micro-batch
                                              share in batch["num_items_in_batch"], by which the
                                              loss's sum is divided (segfast.models.llm)
    evaluate(batch, meters)                   update segfast.metrics meters during evaluation
                                              (segfast.train.evaluation: every sample once; the
                                              eval splits carry original_masks / original_ignore
                                              for IoU at the image's resolution)
"""

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class SegModel(Protocol):
    def forward(self, batch: dict) -> dict[str, torch.Tensor]: ...

    def parameters(self, recurse: bool = True): ...
