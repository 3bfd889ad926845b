"""The LLaFS model: frozen image encoder -> Q-Former -> linear projection -> LLM (LoRA) writes
polygons -> rasterized -> refinement network. Losses L = L_llm + L_ref.

Batches (from segfast.data's llafs-pseudo or fewshot datasets, one episode per sample):
    support_images (B, K, 3, H, W), support_masks (B, K, H, W), support_polygons: per sample, per
    support, (n, V, 2); query_image (B, 3, H, W), query_mask (B, H, W), query_polygons: per sample
    (n, V, 2); optional hints (B, V) bool (pretraining instruction), class_names, attributes.

L_llm: the answer lists the query's polygons in the order that best matches what the model
predicts (Hungarian matching on teacher-forced predictions, done only when a sample has several
objects), then cross-entropy over the answer's tokens. L_ref: OHEM cross-entropy of the refined
mask, whose prior is the rasterized teacher-forced prediction (at inference: the generated one).

model.options (LLaFSOptions, options.py): image_size, encoder (tiny | resnet50), encoder_path,
encoder_widths, freeze_encoder (the paper freezes its pretrained encoder; the offline demo's
random-init one must learn), qformer (Blip2QFormerConfig fields) or qformer_path, num_query_tokens, llm
(tiny Llama fields when model.path is empty), refine_dim, refine_queries, refine_layers,
ohem_thresh, ohem_min_kept, max_objects.
"""

import logging

import torch
import torch.nn.functional as F
from torch import nn

from segfast.config import ModelConfig, build_options
from segfast.metrics import FoldIoU
from segfast.models.llafs.answer import AnswerError, coordinate_tokens, dequantize, format_answer, parse_answer
from segfast.models.llafs.encoder import ImageEncoder
from segfast.models.llafs.matching import reorder_ground_truth
from segfast.models.llafs.options import LLaFSOptions
from segfast.models.llafs.prompts import IMAGE, pretrain_instruction, special_tokens, task_instruction, template_words
from segfast.models.llafs.refine import RefinementNetwork, sine_position
from segfast.models.llm import LLMHooks, build_llm, token_mean_kwargs
from segfast.ops import ohem_cross_entropy, rasterize_polygons

log = logging.getLogger("segfast")
IGNORE = -100


class LLaFS(LLMHooks, nn.Module):
    def __init__(self, cfg: ModelConfig, device=None):
        super().__init__()
        o = self.options = build_options(LLaFSOptions, cfg.options)
        self.image_size = int(o.image_size)
        self.encoder = ImageEncoder(o.encoder, o.encoder_path, tuple(o.encoder_widths), o.freeze_encoder)
        channels = self.encoder.out_channels
        self.support_mask_embed = nn.Parameter(torch.zeros(channels))
        self.prior_embed = nn.Parameter(torch.zeros(channels))
        self.qformer = self._qformer(o, channels)
        hidden_q = self.qformer.config.hidden_size
        self.query_tokens = nn.Parameter(torch.randn(1, int(o.num_query_tokens), hidden_q) * 0.02)
        self.lm, self.tokenizer = build_llm(cfg, o.llm, template_words(), special_tokens(), device)
        self.project = nn.Linear(hidden_q, self.lm.get_input_embeddings().embedding_dim)
        self.refine = RefinementNetwork(channels + 1, o.refine_dim, o.refine_queries, o.refine_layers)
        self.image_id = self.tokenizer.convert_tokens_to_ids(IMAGE)
        coord = self.tokenizer.convert_tokens_to_ids(coordinate_tokens())
        self.register_buffer("coord_ids", torch.tensor(coord), persistent=False)
        self._tokens = 0

    # ---- construction ------------------------------------------------------------------------
    @staticmethod
    def _qformer(o, channels):
        from transformers import Blip2QFormerConfig, Blip2QFormerModel

        if o.qformer_path:
            model = Blip2QFormerModel.from_pretrained(o.qformer_path)
            if model.config.encoder_hidden_size != channels:
                raise ValueError(
                    f"the Q-Former at {o['qformer_path']} expects {model.config.encoder_hidden_size} "
                    f"encoder channels; the image encoder gives {channels}"
                )
            return model
        return Blip2QFormerModel(Blip2QFormerConfig(**{**o.qformer, "encoder_hidden_size": channels}))

    # ---- visual tokens -----------------------------------------------------------------------
    def visual_tokens(self, feats: torch.Tensor, cue: torch.Tensor, embed: torch.Tensor) -> torch.Tensor:
        """Q-Former tokens projected to the LLM, (N, Q, D_llm), from (N, C, h, w) features with
        `embed` (C,) added in proportion to `cue` (N, h, w) in [0, 1]: the support mask for
        support images, the similarity prior for the query."""
        memory = feats + cue[:, None] * embed[None, :, None, None]
        # conv features carry no absolute position (a ViT's do): add it, or the LLM cannot localise
        h, w = feats.shape[-2:]
        memory = memory.flatten(2).transpose(1, 2) + sine_position(h, w, memory.shape[1], feats.device).to(feats.dtype)
        out = self.qformer(query_embeds=self.query_tokens.expand(len(feats), -1, -1), encoder_hidden_states=memory)
        return self.project(out.last_hidden_state)

    @staticmethod
    def similarity_prior(query_feats, support_feats, support_masks) -> torch.Tensor:
        """(B, h, w) in [0, 1]: cosine similarity of each query feature to the support
        foreground prototype (masked average over the K supports), min-max normalised per image
        (PFENet's training-free prior). It tells the LLM and the refinement which colours and
        textures the target has; LLaFS's paper leaves this comparison to the LLM alone."""
        b, k = support_masks.shape[:2]
        weights = F.interpolate(
            support_masks.flatten(0, 1)[:, None].float(), size=support_feats.shape[-2:], mode="area"
        ).view(b, k, 1, *support_feats.shape[-2:])
        feats = support_feats.view(b, k, *support_feats.shape[1:])
        prototype = (feats * weights).sum((1, 3, 4)) / weights.sum((1, 3, 4)).clamp(min=1e-6)  # (B, C)
        sim = F.cosine_similarity(query_feats, prototype[:, :, None, None], dim=1)  # (B, h, w)
        lo, hi = sim.flatten(1).min(1).values, sim.flatten(1).max(1).values
        return (sim - lo[:, None, None]) / (hi - lo).clamp(min=1e-6)[:, None, None]

    def _visual_lists(self, batch: dict):
        """Per sample the K support images' tokens and the query's, and the query's refinement
        features (encoder features and the similarity prior, (B, C + 1, h, w))."""
        b, k = batch["support_images"].shape[:2]
        support_feats = self.encoder(batch["support_images"].flatten(0, 1))
        query_feats = self.encoder(batch["query_image"])
        masks = batch["support_masks"].flatten(0, 1)
        inside = F.interpolate(masks[:, None].float(), size=support_feats.shape[-2:], mode="area")[:, 0]
        support_tokens = self.visual_tokens(support_feats, inside, self.support_mask_embed)
        prior = self.similarity_prior(query_feats, support_feats, batch["support_masks"])
        query_tokens = self.visual_tokens(query_feats, prior, self.prior_embed)
        support_tokens = support_tokens.view(b, k, *support_tokens.shape[1:])
        visual = [list(support_tokens[i]) + [query_tokens[i]] for i in range(b)]
        return visual, torch.cat([query_feats, prior[:, None]], 1)

    # ---- text --------------------------------------------------------------------------------
    def instruction(self, batch: dict, i: int) -> str:
        size = self.image_size
        supports = batch["support_polygons"][i]
        if "hints" in batch:
            return pretrain_instruction(supports, batch["query_polygons"][i][0], batch["hints"][i], size, size)
        names, attributes = batch.get("class_names"), batch.get("attributes")
        return task_instruction(
            supports, size, size, names[i] if names else None, attributes[i] if attributes else None
        )

    def _embed(self, text: str, visual: list, answer: str | None):
        """(embeddings (L, D), labels (L,)) for one sample: the prompt's IMAGE_TOKENs replaced by
        the images' tokens in order, then the answer (labelled) and EOS."""
        tok = self.tokenizer
        ids = tok(text, add_special_tokens=False)["input_ids"]
        if tok.bos_token_id is not None:
            ids = [tok.bos_token_id] + ids
        if ids.count(self.image_id) != len(visual):
            raise ValueError(f"the instruction has {ids.count(self.image_id)} {IMAGE} tokens for {len(visual)} images")
        embed = self.lm.get_input_embeddings()
        dev = embed.weight.device
        ids_t = torch.tensor(ids, device=dev)
        parts, labels, start, v = [], [], 0, 0
        for pos in (ids_t == self.image_id).nonzero()[:, 0].tolist() + [len(ids)]:
            parts.append(embed(ids_t[start:pos]))
            labels.append(torch.full((pos - start,), IGNORE, device=dev))
            if pos < len(ids):
                parts.append(visual[v].to(parts[-1].dtype))
                labels.append(torch.full((len(visual[v]),), IGNORE, device=dev))
                v += 1
            start = pos + 1
        if answer is not None:
            answer_ids = torch.tensor(
                tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id], device=dev
            )
            parts.append(embed(answer_ids))
            labels.append(answer_ids)
        return torch.cat(parts), torch.cat(labels)

    @staticmethod
    def _pad(items, left: bool = False):
        longest = max(e.shape[0] for e, _ in items)
        dim, dev, dtype = items[0][0].shape[1], items[0][0].device, items[0][0].dtype
        embeds = torch.zeros(len(items), longest, dim, device=dev, dtype=dtype)
        labels = torch.full((len(items), longest), IGNORE, device=dev, dtype=torch.long)
        attention = torch.zeros(len(items), longest, device=dev, dtype=torch.long)
        for i, (e, lab) in enumerate(items):
            sl = slice(longest - len(e), longest) if left else slice(0, len(e))
            embeds[i, sl], labels[i, sl], attention[i, sl] = e, lab, 1
        return embeds, labels, attention

    # ---- training ----------------------------------------------------------------------------
    def _teacher_forced(self, batch, visual, answers):
        """(the answers' cross-entropy (segfast.models.llm.token_mean_kwargs), per sample the
        polygons the model predicts under teacher forcing)."""
        items = [self._embed(self.instruction(batch, i), visual[i], answers[i]) for i in range(len(answers))]
        embeds, labels, attention = self._pad(items)
        self._tokens = int(attention.sum())
        out = self.lm(inputs_embeds=embeds, attention_mask=attention, labels=labels, **token_mean_kwargs(batch))
        return out.loss, self._predicted_polygons(out.logits[:, :-1], labels[:, 1:])

    def count_targets(self, batch: dict) -> int:
        """Engine hook: the answer tokens L_llm is taken over (an answer's length depends only on
        its number of polygons, so the matching that reorders them does not change it)."""
        size, tok = self.image_size, self.tokenizer
        return sum(
            len(
                tok(format_answer(torch.as_tensor(p, dtype=torch.float64).cpu(), size, size), add_special_tokens=False)[
                    "input_ids"
                ]
            )
            + 1
            for p in batch["query_polygons"]
        )

    def _predicted_polygons(self, logits, targets):
        """Per sample (n, V, 2): the coordinate bins the model ranks first where the answer has
        coordinate tokens (teacher forcing), read back in pixels."""
        is_coord = torch.isin(targets, self.coord_ids)
        bins = logits.detach()[..., self.coord_ids].argmax(-1)
        out = []
        for row, sel in zip(bins, is_coord):
            values = row[sel]
            pairs = values[: values.numel() // 32 * 32].view(-1, 16, 2)  # 16 (x, y) pairs per object
            out.append(dequantize(pairs, self.image_size))
        return out

    def forward(self, batch: dict) -> dict:
        size = self.image_size
        visual, query_feats = self._visual_lists(batch)
        gts = [torch.as_tensor(p, dtype=torch.float64).cpu() for p in batch["query_polygons"]]
        answers = [format_answer(p, size, size) for p in gts]
        if any(len(p) > 1 for p in gts):  # match the set of objects to what the model predicts
            with torch.no_grad():
                _, preds = self._teacher_forced(batch, visual, answers)
            gts = [reorder_ground_truth(p.cpu(), g) if len(g) > 1 and len(p) else g for p, g in zip(preds, gts)]
            answers = [format_answer(p, size, size) for p in gts]
        loss_llm, preds = self._teacher_forced(batch, visual, answers)
        prior = self.rasterize(preds, query_feats.device)
        refined = self.refine(query_feats, prior, (size, size))["logits"]
        loss_ref = ohem_cross_entropy(
            refined.float(),
            batch["query_mask"].long(),
            thresh=self.options.ohem_thresh,
            min_kept=self.options.ohem_min_kept,
        )
        return {"loss_llm": loss_llm, "loss_ref": loss_ref}

    def rasterize(self, polygons: list, device) -> torch.Tensor:
        """Per sample (n, V, 2) polygons -> (B, S, S) bool union masks."""
        size = self.image_size
        masks = torch.zeros(len(polygons), size, size, dtype=torch.bool)
        for i, p in enumerate(polygons):
            if len(p):
                masks[i] = rasterize_polygons(p.cpu().double(), size, size).any(0)
        return masks.to(device)

    # ---- inference ---------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, batch: dict) -> dict:
        """Generate, parse, rasterize, refine. Returns polygons (per sample (n, V, 2)), texts,
        errors (None or the parser's reason), polygon_masks and masks (B, S, S) bool."""
        size = self.image_size
        visual, query_feats = self._visual_lists(batch)
        items = [self._embed(self.instruction(batch, i), visual[i], None) for i in range(len(visual))]
        embeds, _, attention = self._pad(items, left=True)
        per_object = len(
            self.tokenizer(format_answer(torch.zeros(1, 16, 2), size, size), add_special_tokens=False)["input_ids"]
        )
        tok = self.tokenizer
        generated = self.lm.generate(
            inputs_embeds=embeds,
            attention_mask=attention,
            do_sample=False,
            max_new_tokens=per_object * self.options.max_objects + 8,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        texts = tok.batch_decode(generated, skip_special_tokens=False)
        polygons, errors = [], []
        for text in texts:
            text = text.split(tok.eos_token)[0].replace(tok.pad_token, " ")
            try:
                polys = parse_answer(text, size, size)
                polygons.append(torch.stack(polys) if polys else torch.zeros(0, 16, 2, dtype=torch.float64))
                errors.append(None)
            except AnswerError as exc:
                polygons.append(torch.zeros(0, 16, 2, dtype=torch.float64))
                errors.append(str(exc))
        prior = self.rasterize(polygons, query_feats.device)
        refined = self.refine(query_feats, prior, (size, size))["logits"]
        return {
            "polygons": polygons,
            "texts": texts,
            "errors": errors,
            "polygon_masks": prior,
            "masks": refined.argmax(1).bool(),
        }

    def evaluate(self, batch: dict, meters: dict) -> None:
        """Engine hook: foreground IoU of the refined masks ("iou") and of the LLM's polygons; with
        few-shot episodes (class_ids) also the papers' metric, the mean over classes of summed
        intersections over unions ("fold", HSNet's; PASCAL's 255 pixels ignored)."""
        from segfast.metrics import IoUMeter

        out = self.predict(batch)
        gt = batch["query_mask"].bool()
        meters["iou"].update(out["masks"], gt)
        meters.setdefault("polygon_iou", IoUMeter()).update(out["polygon_masks"], gt)
        if "class_ids" in batch:  # COCO-20i's 80 classes hold PASCAL-5i's 20
            meters.setdefault("fold", FoldIoU(range(1, 81))).update(
                out["masks"].cpu(), gt.cpu(), batch["class_ids"], batch["query_ignore"].cpu()
            )
