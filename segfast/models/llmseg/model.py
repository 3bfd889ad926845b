"""LLM-Seg: a LoRA-tuned LLM's [SEG] token chooses among SAM's everything-mode proposals.

    DINOv2 (frozen) -> 64x64 patch features at 896 input -> 1x1 conv to 256 (trainable)
    proposal embeddings = segfast mask pooling of those features under each proposal
    LLM (LoRA) reads the image (projected patch tokens) and the query, answers "... [SEG]"
    [SEG] hidden state -> MLP -> 256; Fusion (two-way attention) with the proposal embeddings
    IoU head: similarity P·s (eq. 1 loss against the true IoU); IoP head: MLP [256, 64, 1]
    L = λ_text CE + λ_iou L_iou + λ_iop L_iop (1.0, 1.0, 50.0)

Batches (segfast.data.referring): image (B, 3, S, S) normalised for DINOv2; query (B strings);
proposals (B, K, S, 8*ceil(S/64)) packed, padded with empty masks; proposal_valid (B, K) bool;
gt_mask (B, S, S) bool.

The LLM sees the image as `visual_tokens`² DINOv2 patch tokens through a trainable projector,
LLaVA's recipe with DINOv2 in place of CLIP, so one vision backbone serves both sides; a LLaVA
checkpoint's language model loads through model.path (its CLIP tower is then unused).

model.options (LLMSegOptions, options.py): image_size, dinov2_path (local transformers Dinov2Model; empty = tiny
random from `dinov2`), dim, fusion_heads, fusion_blocks, fusion_mlp, tau, normalize,
lambda_text, lambda_iou, lambda_iop, visual_tokens, llm (tiny Llama fields when model.path is
empty), selection, iop_threshold.
"""

import torch
import torch.nn.functional as F
from torch import nn

from segfast.config import ModelConfig, build_options
from segfast.models.llm import LLMHooks, build_llm, count_labelled, token_mean_kwargs
from segfast.models.llmseg.heads import Fusion, iop_loss, iou_alignment_loss, mlp, select, similarity
from segfast.models.llmseg.options import LLMSegOptions
from segfast.ops import mask_iop, mask_iou, mask_pool, unpack_masks
from segfast.text.synthetic import SYNTHETIC_WORDS
from segfast.text.tokens import SEG

IGNORE = -100
PROMPT = "USER: {query} Please output the segmentation mask. ASSISTANT:"
ANSWER = " Sure, it is [SEG] ."


def prompt_words() -> list:
    """The words of the tiny tokenizer: the templates and the synthetic queries' vocabulary."""
    return sorted(set((PROMPT + ANSWER).replace("{query}", "").split()) | set(SYNTHETIC_WORDS) | {"."})


class LLMSeg(LLMHooks, nn.Module):
    def __init__(self, cfg: ModelConfig, device=None):
        super().__init__()
        o = self.options = build_options(LLMSegOptions, cfg.options)
        self.image_size = int(o.image_size)
        self.dinov2 = self._dinov2(o).requires_grad_(False).eval()
        width = self.dinov2.config.hidden_size
        dim = int(o.dim)
        self.project = nn.Conv2d(width, dim, 1)
        self.lm, self.tokenizer = build_llm(cfg, o.llm, prompt_words(), [SEG], device)
        d_llm = self.lm.get_input_embeddings().embedding_dim
        self.visual = mlp([width, d_llm, d_llm])
        self.seg_fc = mlp([d_llm, d_llm, dim])
        self.fusion = Fusion(dim, int(o.fusion_heads), int(o.fusion_blocks), int(o.fusion_mlp))
        self.iop_head = mlp([dim, 64, 1])
        self.seg_id = self.tokenizer.convert_tokens_to_ids(SEG)
        self._tokens = 0

    # ---- construction ------------------------------------------------------------------------
    def _dinov2(self, o):
        from transformers import Dinov2Config, Dinov2Model

        if o.dinov2_path:
            return Dinov2Model.from_pretrained(o.dinov2_path)
        return Dinov2Model(Dinov2Config(**{**o.dinov2, "image_size": o.image_size}))

    def train(self, mode: bool = True):
        super().train(mode)
        self.dinov2.eval()  # frozen: no dropout, ever
        return self

    # ---- forward -----------------------------------------------------------------------------
    def features(self, image: torch.Tensor) -> torch.Tensor:
        """(B, C_dino, g, g) patch features; no gradients (DINOv2 is frozen)."""
        with torch.no_grad():
            tokens = self.dinov2(pixel_values=image).last_hidden_state[:, 1:]
        g = int(round(tokens.shape[1] ** 0.5))
        return tokens.transpose(1, 2).reshape(len(image), -1, g, g)

    def _sequences(self, queries, with_answer: bool, device):
        """Token ids and labels (answer tokens only) per sample, right-padded."""
        ids, labels = [], []
        for q in queries:
            prompt = self.tokenizer(PROMPT.format(query=q), add_special_tokens=False)["input_ids"]
            answer = self.tokenizer(ANSWER, add_special_tokens=False)["input_ids"] if with_answer else []
            ids.append(prompt + answer)
            labels.append([IGNORE] * len(prompt) + answer)
        longest = max(map(len, ids))
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([s + [pad] * (longest - len(s)) for s in ids], device=device)
        label_t = torch.tensor([s + [IGNORE] * (longest - len(s)) for s in labels], device=device)
        attention = torch.tensor([[1] * len(s) + [0] * (longest - len(s)) for s in ids], device=device)
        return input_ids, label_t, attention

    def count_targets(self, batch: dict) -> int:
        """Engine hook: the answer tokens the text loss is taken over."""
        return count_labelled(self._sequences(batch["query"], True, "cpu")[1])

    def _run_llm(self, feats, queries, loss_kwargs: dict):
        """Teacher-forced LLM pass; returns (text loss, [SEG] embeddings (B, dim))."""
        n = int(self.options.visual_tokens)
        visual = self.visual(F.adaptive_avg_pool2d(feats, n).flatten(2).transpose(1, 2))
        input_ids, labels, attention = self._sequences(queries, True, feats.device)
        text = self.lm.get_input_embeddings()(input_ids)
        embeds = torch.cat([visual.to(text.dtype), text], dim=1)
        b = len(feats)
        ones = torch.ones(b, n * n, dtype=attention.dtype, device=attention.device)
        labels = torch.cat([torch.full((b, n * n), IGNORE, device=labels.device), labels], dim=1)
        out = self.lm(
            inputs_embeds=embeds,
            attention_mask=torch.cat([ones, attention], 1),
            labels=labels,
            output_hidden_states=True,
            **loss_kwargs,
        )
        self._tokens = int(attention.sum()) + b * n * n
        is_seg = torch.cat([torch.zeros(b, n * n, dtype=torch.bool, device=feats.device), input_ids == self.seg_id], 1)
        first = is_seg.float().argmax(1)  # the first [SEG] of each answer
        hidden = out.hidden_states[-1][torch.arange(b, device=feats.device), first]
        return out.loss, self.seg_fc(hidden.float())

    def select_side(self, feats, proposals, valid, seg):
        """(similarity scores (B, K), predicted IoP (B, K)) from the fusion and heads."""
        proj = self.project(feats.to(self.project.weight.dtype))
        embeds = mask_pool(proj, proposals, weights="bilinear", width=self.image_size)
        seg, embeds = self.fusion(seg, embeds)
        scores = similarity(embeds, seg, bool(self.options.normalize))
        iop = torch.sigmoid(self.iop_head(embeds)[..., 0])
        return scores, iop

    def forward(self, batch: dict) -> dict:
        feats = self.features(batch["image"])
        text_loss, seg = self._run_llm(feats, batch["query"], token_mean_kwargs(batch))
        proposals, valid = batch["proposals"], batch["proposal_valid"]
        scores, iop = self.select_side(feats, proposals, valid, seg)
        gt_iou, gt_iop = ground_truth(proposals, batch["gt_mask"])
        o = self.options
        return {
            "text": o.lambda_text * text_loss,
            "iou": o.lambda_iou * iou_alignment_loss(scores, gt_iou, valid, float(o.tau)),
            "iop": o.lambda_iop * iop_loss(iop, gt_iop, valid),
        }

    @torch.no_grad()
    def predict(self, batch: dict, strategy: str | None = None) -> dict:
        """Masks (B, S, S) bool: the union of the proposals the strategy selects. The [SEG]
        embedding comes from the teacher-forced answer, which is what the model generates once
        trained (LLM-Seg's answers are one fixed sentence)."""
        feats = self.features(batch["image"])
        _, seg = self._run_llm(feats, batch["query"], {})
        valid = batch["proposal_valid"]
        scores, iop = self.select_side(feats, batch["proposals"], valid, seg)
        chosen = select(scores, iop, valid, strategy or self.options.selection, float(self.options.iop_threshold))
        dense = unpack_masks(batch["proposals"], self.image_size)
        return {"masks": (dense & chosen[:, :, None, None]).any(1), "chosen": chosen, "scores": scores, "iop": iop}

    def evaluate(self, batch: dict, meters: dict) -> None:
        """Engine hook: gIoU / cIoU ("iou") of the selected proposals at the image's original
        resolution (the proposals as SAM made them), as LLM-Seg's validation scores them."""
        chosen = self.predict(batch)["chosen"].cpu()
        for b, proposals in enumerate(batch["original_proposals"]):
            target = batch["original_masks"][b]
            pred = unpack_masks(proposals[chosen[b, : len(proposals)]], target.shape[-1]).any(0, keepdim=True)
            meters["iou"].update(pred, target.bool(), ignore=batch["original_ignore"][b].bool())


def ground_truth(proposals: torch.Tensor, gt_mask: torch.Tensor):
    """True IoU and IoP (B, K) of every proposal with the image's target (segfast popcounts)."""
    ious, iops = [], []
    for props, gt in zip(proposals, gt_mask):
        ious.append(mask_iou(props, gt[None].bool())[:, 0])
        iops.append(mask_iop(props, gt[None].bool())[:, 0])
    return torch.stack(ious).float(), torch.stack(iops).float()
