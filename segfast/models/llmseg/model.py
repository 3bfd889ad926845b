"""LLM-Seg: a LoRA-tuned LLaVA's [SEG] token chooses among SAM's everything-mode proposals.

    LLaVA (its own CLIP tower and projector, both frozen; LoRA on the LLM) reads the image and
        the question, answers "... [SEG]."; the last-layer state that predicts [SEG] -> MLP -> 256
    DINOv2 (frozen) on the image resized (longest side 896) and padded -> 64x64 patch features
        -> 1x1 conv to 256 (trainable)
    proposal embeddings: mask pooling of those features under each proposal, the authors' way
        (features upsampled to 256x256, masks padded square and resized there antialiased)
    fusion (two two-way blocks, masks as queries, [SEG] as keys, then mask -> [SEG] attention)
    IoU head: the shared MLP 256 -> 2048 -> 256 on the fused masks, cosine similarity with the
        un-fused [SEG] embedding; loss KL(softmax(IoU/τ) || softmax(sim/τ)) summed over proposals
    IoP head: MLP [256, 64, 1] + sigmoid; loss mean exp(g - 1)(p - g)^2, λ_iop = 50
    L = λ_text CE + λ_iou L_iou + λ_iop L_iop, the mask losses averaged over an image's
        conversations, then over images (authors' code)

Batches (segfast.data.referring): image (B, 3, S, S) the DINOv2 frame; clip_image (B, 3, C, C)
LLaVA's input; conversations (B lists of single-round conversations, each its own LLM sequence
sharing the image, as the authors batch them); proposals (B packed (K_b, P_b, 8*ceil(P_b/64)):
the proposals at SAM's resolution padded square); proposal_size (B, 2) their unpadded (h, w);
gt_iou, gt_iop (B tensors (C_b, K_b)). Evaluation batches add original_masks (C_b, H, W) and
original_ignore (H, W).

Departures, each an option off in the paper configuration: kl="pred||gt" (eq. 1 read
literally), iop_hidden=128 (the authors' code; the paper's 64 is the default), backbone=sam,
fusion=mlp and heads=iou|iop (Tables 2 and 4), dinov2_positions=transformers (transformers' own
resampling of DINOv2's position grid; the authors' torch.hub model resamples it as
segfast.models.llmseg.dinov2 does). Not reproduced: the authors resize the proposals
of their sem_seg and refer_seg loaders without antialiasing (ReasonSeg, LLM-Seg40K and every
evaluation antialias; segfast antialiases always).
"""

import torch
import torch.nn.functional as F
from torch import nn

from segfast.config import ConfigError, ModelConfig, build_options
from segfast.metrics import NcIoUMeter
from segfast.models.lisa.conversation import encode, predicting
from segfast.models.llava import (
    IMAGE,
    build_llava,
    conversation_embeds,
    image_features,
    image_size,
    image_token_count,
    projector,
    uses_image_start_end,
    vision_tower,
    with_image_start_end,
)
from segfast.models.llm import LLMHooks, count_labelled, token_mean_kwargs
from segfast.models.llmseg.dinov2 import use_hub_positions
from segfast.models.llmseg.fusion import Fusion, MLPFusion
from segfast.models.llmseg.heads import KL_DIRECTIONS, SELECTIONS, iop_loss, iou_alignment_loss, mlp, select, similarity
from segfast.models.llmseg.options import BACKBONES, FUSIONS, HEADS, POSITIONS, LLMSegOptions
from segfast.ops import mask_pool, unpack_masks
from segfast.text.lisa import vocabulary
from segfast.text.tokens import IM_END, IM_START, SEG

NCIOU_SIZE = (1024, 1024)  # authors' training.py validate_threshold: both masks resized there (nearest)


def check_options(o: LLMSegOptions) -> None:
    for key, value, known in (
        ("backbone", o.backbone, BACKBONES),
        ("fusion", o.fusion, FUSIONS),
        ("dinov2_positions", o.dinov2_positions, POSITIONS),
        ("heads", o.heads, HEADS),
        ("selection", o.selection, SELECTIONS),
        ("kl", o.kl, KL_DIRECTIONS),
    ):
        if value not in known:
            raise ConfigError(f"model.options.{key} must be one of {', '.join(known)}, got {value!r}")
    needs = {"iou": "iou" in o.selection, "iop": "iop" in o.selection}
    missing = [h for h, needed in needs.items() if needed and o.heads not in ("both", h)]
    if missing:
        raise ConfigError(
            f"model.options.selection={o.selection!r} needs the {missing[0].upper()} head, but "
            f"model.options.heads={o.heads!r} (use top1_iou with heads=iou, iop_threshold with heads=iop)"
        )


class LLMSeg(LLMHooks, nn.Module):
    def __init__(self, cfg: ModelConfig, device=None):
        super().__init__()
        o = self.options = build_options(LLMSegOptions, cfg.options)
        check_options(o)
        self.backbone, width = self._backbone(o)
        self.backbone.requires_grad_(False).eval()
        dim = int(o.dim)
        self.project = nn.Conv2d(width, dim, 1)  # the authors' lisa_dino_conv
        self.image_start_end = uses_image_start_end(o.image_start_end, cfg.path)
        tokens = [SEG] + ([IM_START, IM_END] if self.image_start_end else [])
        self.lm, self.tokenizer = build_llava(cfg, o.llava, vocabulary(), tokens, device)
        projector(self.lm).requires_grad_(False)  # LLM-Seg keeps LLaVA's projector frozen (authors' code)
        d = self.lm.get_input_embeddings().embedding_dim
        self.text_fc = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, dim))  # text_hidden_fcs
        self.fusion = (
            Fusion(dim, int(o.fusion_heads), int(o.fusion_blocks), int(o.fusion_mlp))
            if o.fusion == "two_way"
            else MLPFusion(dim, int(o.fusion_mlp))
        )
        self.embedding_head = mlp([dim, int(o.embedding_hidden), dim]) if o.heads != "iop" else None
        self.iop_head = mlp([dim, int(o.iop_hidden), 1], sigmoid=True) if o.heads != "iou" else None
        self.seg_id = self.tokenizer.convert_tokens_to_ids(SEG)
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(IMAGE)
        self.image_slots = image_token_count(self.lm)
        self._tokens = 0

    # ---- construction ------------------------------------------------------------------------
    @staticmethod
    def _backbone(o) -> tuple:
        """(frozen image encoder of the mask embeddings, its channel width)."""
        if o.backbone == "sam":
            from segfast.models.sam.build import load_sam, tiny_sam

            sam = (
                tiny_sam(o.sam_checkpoint or None, image_size=int(o.sam_image_size))
                if o.sam_type == "tiny"
                else load_sam(o.sam_type, o.sam_checkpoint or None)
            )
            if sam.image_encoder.img_size != int(o.image_size):
                raise ConfigError(
                    f"model.options.image_size={o.image_size} must be the SAM encoder's input size "
                    f"{sam.image_encoder.img_size} with backbone=sam"
                )
            return sam.image_encoder, sam.image_encoder.neck[0].out_channels
        from transformers import Dinov2Config, Dinov2Model

        if o.dinov2_path:
            model = Dinov2Model.from_pretrained(o.dinov2_path)
        else:
            model = Dinov2Model(Dinov2Config(**{**o.dinov2, "image_size": o.image_size}))
        if o.dinov2_positions == "hub":
            use_hub_positions(model)
        return model, model.config.hidden_size

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()  # frozen: no dropout, ever
        vision_tower(self.lm).eval()
        return self

    # ---- the image side ----------------------------------------------------------------------
    def features(self, image: torch.Tensor) -> torch.Tensor:
        """(B, C, g, g) frozen backbone features of the padded frame."""
        with torch.no_grad():
            if self.options.backbone == "sam":
                return self.backbone(image.to(self.project.weight.dtype))
            tokens = self.backbone(pixel_values=image.to(self.project.weight.dtype)).last_hidden_state[:, 1:]
        g = int(round(tokens.shape[1] ** 0.5))
        return tokens.transpose(1, 2).reshape(len(image), -1, g, g)

    def proposal_embeddings(self, batch: dict) -> tuple:
        """((B, K, dim) pooled embeddings, (B, K) valid) with K the batch's largest proposal
        count; an image's padded slots are zero and invalid."""
        feats = self.project(self.features(batch["image"]).to(self.project.weight.dtype))
        grid = (int(self.options.pool_grid),) * 2
        props = list(batch["proposals"])
        k = max(1, max(len(p) for p in props))
        pooled, valid = [], torch.zeros(len(props), k, dtype=torch.bool, device=feats.device)
        for b, p in enumerate(props):
            p = p.to(feats.device)
            if len(p):
                e = mask_pool(feats[b : b + 1], p[None], weights="bilinear", grid=grid, width=p.shape[1])[0]
            else:
                e = feats.new_zeros(0, feats.shape[1])
            pooled.append(F.pad(e, (0, 0, 0, k - len(p))))
            valid[b, : len(p)] = True
        return torch.stack(pooled), valid

    # ---- the language side -------------------------------------------------------------------
    def flat_conversations(self, batch: dict) -> tuple:
        """(conversations of the whole batch, the image index of each)."""
        convs = batch["conversations"]
        return [c for cs in convs for c in cs], [b for b, cs in enumerate(convs) for _ in cs]

    def encode(self, rounds: list):
        if self.image_start_end:  # the authors' collate_fn wraps <image> before tokenizing, as LISA's
            rounds = with_image_start_end(rounds)
        return encode(
            self.tokenizer,
            rounds,
            image_token_id=self.image_token_id,
            image_slots=self.image_slots,
            system=self.options.system,
        )

    def count_targets(self, batch: dict) -> int:
        """Engine hook: the answer tokens the text loss is taken over."""
        return count_labelled(self.encode(c).labels for c in self.flat_conversations(batch)[0])

    def seg_embeddings(self, batch: dict, loss_kwargs: dict) -> tuple:
        """Teacher-forced LLaVA pass over every conversation: (LM output, (N, dim) [SEG] embeddings
        from the last-layer state that predicts each conversation's [SEG], image index per row)."""
        flat, owner = self.flat_conversations(batch)
        if not flat:
            raise ValueError("conversations: every batch needs at least one conversation")
        clip = batch["clip_image"]
        if clip.shape[-1] != image_size(self.lm):
            raise ValueError(
                f"clip_image is {clip.shape[-1]} pixels but the LLaVA vision tower takes {image_size(self.lm)}: "
                "set data.options.clip_size to it"
            )
        owner = torch.tensor(owner, device=clip.device)
        feats = image_features(self.lm, clip)[owner]
        encoded = [self.encode(c) for c in flat]
        embeds, attention, labels, ids = conversation_embeds(self.lm, self.tokenizer.pad_token_id, encoded, feats)
        self._tokens = int(attention.sum())
        out = self.lm(
            inputs_embeds=embeds, attention_mask=attention, labels=labels, output_hidden_states=True, **loss_kwargs
        )
        rows = []
        for n, e in enumerate(encoded):
            at = predicting(e.ids, self.seg_id)
            if len(at) != 1:
                raise ValueError(f"conversation {n}: LLM-Seg's answer holds exactly one {SEG}, this one {len(at)}")
            rows.append(at[0])
        rows = torch.tensor(rows, device=clip.device)
        hidden = out.hidden_states[-1][torch.arange(len(rows), device=clip.device), rows]
        return out, self.text_fc(hidden.float()), owner

    # ---- selection ---------------------------------------------------------------------------
    def select_side(self, batch: dict, seg: torch.Tensor, owner: torch.Tensor) -> tuple:
        """(similarity (N, K) or None, predicted IoP (N, K) or None, valid (N, K)) per conversation."""
        masks, valid = self.proposal_embeddings(batch)
        masks, valid = masks[owner], valid[owner]
        fused = self.fusion(masks, seg, valid)
        scores = None
        if self.embedding_head is not None:
            scores = similarity(self.embedding_head(fused), seg, bool(self.options.normalize))
        iop = self.iop_head(fused)[..., 0] if self.iop_head is not None else None
        return scores, iop, valid

    def run(self, batch: dict, loss_kwargs: dict | None = None) -> tuple:
        out, seg, owner = self.seg_embeddings(batch, loss_kwargs or {})
        return (out, owner, *self.select_side(batch, seg, owner))

    # ---- losses ------------------------------------------------------------------------------
    @staticmethod
    def _targets(rows: list, k: int, device) -> torch.Tensor:
        """Per-image (C_b, K_b) targets -> (N, k) rows in conversation order, zero-padded."""
        return torch.cat([F.pad(r.to(device).float(), (0, k - r.shape[-1])) for r in rows])

    @staticmethod
    def _image_mean(per_row: torch.Tensor, owner: torch.Tensor, has: torch.Tensor) -> torch.Tensor:
        """Mean over each image's conversations, then over images (rows without proposals left out)."""
        b = int(owner.max()) + 1
        sums = per_row.new_zeros(b).index_add(0, owner, per_row * has)
        counts = per_row.new_zeros(b).index_add(0, owner, has.to(per_row.dtype))
        images = counts > 0
        return (sums[images] / counts[images]).mean() if bool(images.any()) else per_row.sum() * 0

    def forward(self, batch: dict) -> dict:
        out, owner, scores, iop, valid = self.run(batch, token_mean_kwargs(batch))
        o, k, has = self.options, valid.shape[1], valid.any(-1)
        losses = {"text": o.lambda_text * out.loss}
        if scores is not None:
            gt_iou = self._targets(list(batch["gt_iou"]), k, valid.device)
            per = iou_alignment_loss(scores, gt_iou, valid, float(o.tau), o.kl)
            losses["iou"] = o.lambda_iou * self._image_mean(per, owner, has)
        if iop is not None:
            gt_iop = self._targets(list(batch["gt_iop"]), k, valid.device)
            losses["iop"] = o.lambda_iop * self._image_mean(iop_loss(iop, gt_iop, valid), owner, has)
        return losses

    # ---- inference ---------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, batch: dict, strategy: str | None = None) -> dict:
        """Per conversation (rows in batch order): chosen (N, K) bool — the proposals whose union
        is the mask —, scores, iop, valid, and owner (the image of each row). The [SEG] state
        comes from the teacher-forced answer ("[SEG]." in evaluation, as the authors' validation
        runs it): LLM-Seg's answers are one fixed sentence."""
        _, owner, scores, iop, valid = self.run(batch)
        chosen = select(scores, iop, valid, strategy or self.options.selection, float(self.options.iop_threshold))
        return {"chosen": chosen, "scores": scores, "iop": iop, "valid": valid, "owner": owner}

    def masks(self, batch: dict, chosen: torch.Tensor, owner: torch.Tensor) -> list:
        """Each row's mask at its proposals' resolution: the union of the chosen proposals."""
        out = []
        for n, b in enumerate(owner.tolist()):
            props, (h, w) = batch["proposals"][b], (int(x) for x in batch["proposal_size"][b])
            pick = chosen[n, : len(props)].to(props.device)
            union = unpack_masks(props[pick], props.shape[1]).any(0) if bool(pick.any()) else None
            out.append(union[:h, :w] if union is not None else torch.zeros(h, w, dtype=torch.bool))
        return out

    def evaluate(self, batch: dict, meters: dict) -> None:
        """Engine hook: gIoU / cIoU ("iou") at each image's original resolution — the selected
        proposals' union resized there (nearest), ignored pixels left out — and ncIoU ("nciou"):
        prediction and target both resized to 1024x1024 (nearest), as the authors' validation
        counts them."""
        pred = self.predict(batch)
        nc = meters.setdefault("nciou", NcIoUMeter(NCIOU_SIZE))
        seen = {}
        for union, b in zip(self.masks(batch, pred["chosen"].cpu(), pred["owner"]), pred["owner"].tolist()):
            c = seen[b] = seen.get(b, -1) + 1
            target, ignore = batch["original_masks"][b][c].cpu().bool(), batch["original_ignore"][b].cpu().bool()
            full = _nearest(union.cpu(), target.shape)
            meters["iou"].update(full[None], target[None], ignore=ignore)
            p, t, i = (_nearest(m, NCIOU_SIZE)[None] for m in (union.cpu(), target, ignore))
            nc.update(p, t, ignore=i)


def _nearest(mask: torch.Tensor, size) -> torch.Tensor:
    """A bool mask resized with F.interpolate's nearest mode (what the authors' validation uses)."""
    return F.interpolate(mask[None, None].float(), size=tuple(int(s) for s in size), mode="nearest")[0, 0] > 0.5
