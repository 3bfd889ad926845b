"""The LLaFS model: frozen image encoder -> Q-Former (with the text "a photo of [class].") ->
fully-connected layer -> LLM (LoRA) writes polygons -> rasterized -> refinement network.
L = L_llm + L_ref (Supp A.5).

Batches (from segfast.data's llafs-pseudo or fewshot datasets, one episode per sample):
    support_images (B, K, 3, S, S), support_masks (B, K, S, S), support_polygons: per sample, per
    support, (n, V, 2); query_image (B, 3, S, S), query_mask (B, S, S), query_polygons: per sample
    (n, V, 2); optional query_ignore (B, S, S) (pixels L_ref and the metrics skip), hints (B, V)
    bool (the pretraining instruction), class_names, attributes, support_tables, and for scoring at
    the label's own size original_mask / original_ignore. V = model.options.num_vertices (the
    paper's 16, Fig. 5 ablates it): the data's num_vertices must match (check_vertices). Stage 1
    (options.stage = qformer) reads caption batches instead: image (B, 3, S, S), caption (B strings).

L_llm: the answer lists the query's polygons in the order that best matches what the model
predicts (Hungarian matching on teacher-forced predictions, done when a sample has several
objects), then cross-entropy over the answer's tokens; in pretraining the answer is the hidden
vertices only ("What is the remaining points?", Supp A.2.4). L_ref: OHEM cross-entropy of the
refined mask (ignored pixels skipped), whose attention mask is the rasterized teacher-forced
prediction (at inference: the generated one).

Training stages (§4.1): stage=qformer trains the Q-Former and the fully-connected layer on
captions with the LLM frozen; stage=segmentation freezes the Q-Former (unless freeze_qformer is
false) and trains the fully-connected layer, the LLM (LoRA) and the refinement network.
"""

import logging

import torch
import torch.nn.functional as F
from torch import nn

from segfast.config import ModelConfig, build_options
from segfast.metrics import FoldIoU, IoUMeter
from segfast.models.llafs.answer import (
    AnswerError,
    dequantize,
    format_answer,
    format_points,
    parse_points,
    read_answer,
)
from segfast.models.llafs.encoder import ImageEncoder
from segfast.models.llafs.matching import reorder_ground_truth
from segfast.models.llafs.options import LLaFSOptions
from segfast.models.llafs.prompts import (
    IMAGE,
    pretrain_answer,
    pretrain_instruction,
    special_tokens,
    task_instruction,
    template_words,
)
from segfast.models.llafs.qformer import VisualTokens
from segfast.models.llafs.refine import RefinementNetwork, sine_position
from segfast.models.llm import LLMHooks, build_llm, token_mean_kwargs
from segfast.ops import ohem_cross_entropy, rasterize_polygons

log = logging.getLogger("segfast")
IGNORE = -100
IGNORE_PIXEL = 255


class LLaFS(LLMHooks, nn.Module):
    def __init__(self, cfg: ModelConfig, device=None):
        super().__init__()
        o = self.options = build_options(LLaFSOptions, cfg.options)
        if o.stage not in ("qformer", "segmentation"):
            raise ValueError(f"model.options.stage must be qformer or segmentation, got {o.stage!r}")
        if o.instruction not in ("task", "abstract"):
            raise ValueError(f"model.options.instruction must be task or abstract, got {o.instruction!r}")
        if not isinstance(o.num_vertices, int) or o.num_vertices < 3:
            raise ValueError(f"model.options.num_vertices must be an integer >= 3, got {o.num_vertices!r}")
        self.image_size, self.bins, self.vertices = int(o.image_size), int(o.coordinate_bins), o.num_vertices
        self.encoder = ImageEncoder(o.encoder, o.encoder_path, tuple(o.encoder_widths), o.freeze_encoder)
        channels = self.encoder.out_channels
        words = template_words(self.vertices)
        self.lm, self.tokenizer = build_llm(cfg, o.llm, words, special_tokens(self.bins), device)
        qformer = dict(o.qformer)
        if o.qformer_path and not o.qformer_path.rstrip("/").split("/")[-1].startswith("step-"):
            qformer = VisualTokens.blip2_config(o.qformer_path)  # a BLIP-2 checkpoint: its own shape
        self.visual = VisualTokens(
            channels,
            self.lm.get_input_embeddings().embedding_dim,
            qformer,
            int(o.num_query_tokens),
            o.qformer_text,
            o.qformer_tokenizer,
            words,
        )
        if o.qformer_path:
            self.visual.load(o.qformer_path)
        if o.support_mask_embed:
            self.support_mask_embed = nn.Parameter(torch.zeros(channels))
        if o.similarity_prior:
            self.prior_embed = nn.Parameter(torch.zeros(channels))
        self.refine = RefinementNetwork(
            channels + int(o.similarity_prior), o.refine_dim, o.refine_queries, o.refine_layers, o.refine_polygon_input
        )
        self.image_id = self.tokenizer.convert_tokens_to_ids(IMAGE)
        coord = self.tokenizer.convert_tokens_to_ids(special_tokens(self.bins)[2:])
        self.register_buffer("coord_ids", torch.tensor(coord), persistent=False)
        if o.coordinate_init == "sine":
            self._sine_coordinates()
        elif o.coordinate_init != "mean":
            raise ValueError(f"model.options.coordinate_init must be mean or sine, got {o.coordinate_init!r}")
        self._freeze_for_stage(o)
        self._tokens = 0

    @torch.no_grad()
    def _sine_coordinates(self) -> None:
        """Starts the coordinate tokens' input and output embeddings from a sine code of their
        value (at the scale of the other embeddings), so that neighbouring bins start alike and
        what is learnt for one bin carries to its neighbours."""
        value = torch.arange(self.bins, dtype=torch.float64)[:, None] / self.bins
        for layer in (self.lm.get_input_embeddings(), self.lm.get_output_embeddings()):
            weight = layer.weight
            dim = weight.shape[1]
            freqs = torch.arange(dim // 2, dtype=torch.float64) / max(1, dim // 2)
            angles = value * torch.pi * (2.0 ** (freqs * 6))  # periods from 2 bins-widths up to the full range
            code = torch.cat([torch.sin(angles), torch.cos(angles)], 1)
            code = torch.nn.functional.pad(code, (0, dim - code.shape[1]))
            scale = weight.std().item() / code.std().item()
            weight[self.coord_ids] = (code * scale).to(weight.dtype).to(weight.device)

    def _freeze_for_stage(self, o) -> None:
        """§4.1: stage 1 trains the Q-Former and the fully-connected layer with the LLM frozen;
        stages 2-3 freeze the Q-Former (its queries, text embeddings and memory projection too)."""
        if o.stage == "qformer":
            self.lm.requires_grad_(False)
            self.refine.requires_grad_(False)
        elif o.freeze_qformer:
            for part in (self.visual.qformer, self.visual.text, self.visual.memory_proj):
                if part is not None:
                    part.requires_grad_(False)
            self.visual.query_tokens.requires_grad_(False)

    # ---- visual tokens -----------------------------------------------------------------------
    def _position(self, feats):
        if not self.options.memory_position:
            return None
        h, w = feats.shape[-2:]
        return sine_position(h, w, feats.shape[1], feats.device)

    @staticmethod
    def similarity_prior(query_feats, support_feats, support_masks) -> torch.Tensor:
        """(B, h, w) in [0, 1]: cosine similarity of each query feature to the support
        foreground prototype (masked average over the K supports), min-max normalised per image
        (PFENet's training-free prior; an option of ours, not LLaFS's)."""
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
        """Per sample the K support images' tokens (none without supports) and the query's, and
        the query's refinement features (B, C [+ 1], h, w)."""
        o = self.options
        b, k = batch["support_images"].shape[:2]
        names = batch.get("class_names") if o.qformer_text else None
        query_feats = self.encoder(batch["query_image"])
        query_in, refine_feats = query_feats, query_feats
        support_tokens = None
        if o.with_support or o.similarity_prior:
            support_feats = self.encoder(batch["support_images"].flatten(0, 1))
        if o.similarity_prior:
            prior = self.similarity_prior(query_feats, support_feats, batch["support_masks"])
            query_in = query_feats + prior[:, None] * self.prior_embed[None, :, None, None]
            refine_feats = torch.cat([query_feats, prior[:, None]], 1)
        if o.with_support:
            support_in = support_feats
            if o.support_mask_embed:
                inside = F.interpolate(
                    batch["support_masks"].flatten(0, 1)[:, None].float(), size=support_feats.shape[-2:], mode="area"
                )
                support_in = support_feats + inside * self.support_mask_embed[None, :, None, None]
            support_names = [n for n in names for _ in range(k)] if names else None
            support_tokens = self.visual(support_in, support_names, self._position(support_feats))
            support_tokens = support_tokens.view(b, k, *support_tokens.shape[1:])
        query_tokens = self.visual(query_in, names, self._position(query_feats))
        visual = [(list(support_tokens[i]) if support_tokens is not None else []) + [query_tokens[i]] for i in range(b)]
        return visual, refine_feats

    # ---- text --------------------------------------------------------------------------------
    def instruction(self, batch: dict, i: int) -> str:
        o, size = self.options, self.image_size
        supports = batch["support_polygons"][i]
        if "hints" in batch:
            return pretrain_instruction(supports, batch["query_polygons"][i][0], batch["hints"][i], size, self.bins)
        names = batch.get("class_names")
        fine = o.fine_grained
        return task_instruction(
            supports,
            size,
            names[i] if names else "target",
            attributes=batch["attributes"][i] if fine and "attributes" in batch else None,
            tables=batch["support_tables"][i] if fine and "support_tables" in batch else None,
            bins=self.bins,
            abstract=o.instruction == "abstract",
            with_support=o.with_support,
            num_vertices=self.vertices,
        )

    def check_vertices(self, batch: dict) -> None:
        """Raises ValueError when a polygon of the batch (query, support, region table) or its
        hints has another vertex count than model.options.num_vertices: the answers would be
        written and parsed with the wrong count."""
        v, shape = self.vertices, lambda p: torch.as_tensor(p).shape[-2]  # (..., V, 2)
        found = {
            "query_polygons": [shape(p) for p in batch.get("query_polygons", [])],
            "support_polygons": [shape(p) for sample in batch.get("support_polygons", []) for p in sample],
            "support_tables": [shape(r["polygon"]) for s in batch.get("support_tables", []) for t in s for r in t],
            "hints": [batch["hints"].shape[-1]] if "hints" in batch else [],
        }
        for key, counts in found.items():
            if wrong := sorted(set(counts) - {v}):
                raise ValueError(
                    f"the batch's {key} have {wrong[0]} vertices, model.options.num_vertices is {v}: make the data "
                    f"with data.options.num_vertices={v} (region tables: segfast llafs-tables --num-vertices {v})"
                )

    def answer(self, batch: dict, i: int, polygons) -> str:
        """The target text: the hidden vertices in pretraining, else the answer tuple."""
        if "hints" in batch:
            return pretrain_answer(torch.as_tensor(polygons[0]), batch["hints"][i].cpu(), self.image_size, self.bins)
        return format_answer(polygons, self.image_size, self.image_size, self.bins)

    def _embed(self, text: str, visual: list, answer: str | None):
        """(embeddings (L, D), labels (L,)) for one sample: the prompt's IMAGE tokens replaced by
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
        """(the answers' cross-entropy, per sample the polygons the model predicts under teacher
        forcing). Sequences are left-padded (as for generation, positions counted from each
        sequence's first token), so the answers end together and the LM head runs only over the
        answers' positions. The loss is the token mean, or the token sum over
        batch["num_items_in_batch"] (segfast.models.llm.token_mean_kwargs) when the engine gives it."""
        items = [self._embed(self.instruction(batch, i), visual[i], answers[i]) for i in range(len(answers))]
        embeds, labels, attention = self._pad(items, left=True)
        self._tokens = int(attention.sum())
        keep = int((labels != IGNORE).sum(1).max()) + 1
        positions = (attention.cumsum(1) - 1).clamp(min=0)
        out = self.lm(inputs_embeds=embeds, attention_mask=attention, position_ids=positions, logits_to_keep=keep)
        logits, targets = out.logits[:, :-1].float(), labels[:, -keep + 1 :]
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction="sum")
        n = token_mean_kwargs(batch).get("num_items_in_batch") or int((targets != IGNORE).sum())
        return loss / n, self._predicted_polygons(logits, targets, batch)

    def _answers(self, batch, gts) -> list[str]:
        return [self.answer(batch, i, g) for i, g in enumerate(gts)]

    def count_targets(self, batch: dict) -> int:
        """Engine hook: the answer tokens L_llm is taken over (an answer's length depends only on
        its number of polygons or hidden vertices, so the matching does not change it)."""
        if self.options.stage == "qformer":
            return sum(len(self.tokenizer(c, add_special_tokens=False)["input_ids"]) + 1 for c in batch["caption"])
        self.check_vertices(batch)
        gts = [torch.as_tensor(p, dtype=torch.float64).cpu() for p in batch["query_polygons"]]
        return sum(len(self.tokenizer(a, add_special_tokens=False)["input_ids"]) + 1 for a in self._answers(batch, gts))

    def _predicted_polygons(self, logits, targets, batch):
        """Per sample (n, V, 2): the coordinate bins the model ranks first where the answer has
        coordinate tokens (teacher forcing), read back in pixels; in pretraining the hidden
        vertices predicted and the given ones kept."""
        is_coord = torch.isin(targets, self.coord_ids)
        bins = logits.detach()[..., self.coord_ids].argmax(-1)
        out = []
        for i, (row, sel) in enumerate(zip(bins, is_coord)):
            values = dequantize(row[sel].cpu(), self.image_size, self.bins)
            if "hints" in batch:
                poly = torch.as_tensor(batch["query_polygons"][i][0], dtype=torch.float64).cpu().clone()
                hidden = ~batch["hints"][i].cpu()
                poly[hidden] = values.view(-1, 2)
                out.append(poly[None])
            else:
                v = self.vertices
                out.append(values[: values.numel() // (2 * v) * 2 * v].view(-1, v, 2))
        return out

    def _caption_loss(self, batch: dict) -> dict:
        """Stage 1 (BLIP-2's generative pretraining): the frozen LLM reads the visual tokens and
        is trained, through the Q-Former and the fully-connected layer only, to write the caption."""
        feats = self.encoder(batch["image"])
        tokens = self.visual(feats, None, self._position(feats))
        items = [self._embed(IMAGE, [tokens[i]], c) for i, c in enumerate(batch["caption"])]
        embeds, labels, attention = self._pad(items)
        self._tokens = int(attention.sum())
        out = self.lm(inputs_embeds=embeds, attention_mask=attention, labels=labels, **token_mean_kwargs(batch))
        return {"loss_caption": out.loss}

    def forward(self, batch: dict) -> dict:
        if self.options.stage == "qformer":
            return self._caption_loss(batch)
        self.check_vertices(batch)
        visual, refine_feats = self._visual_lists(batch)
        gts = [torch.as_tensor(p, dtype=torch.float64).cpu() for p in batch["query_polygons"]]
        if "hints" not in batch and any(len(p) > 1 for p in gts):  # match the objects to the predictions
            with torch.no_grad():
                _, preds = self._teacher_forced(batch, visual, self._answers(batch, gts))
            gts = [reorder_ground_truth(p, g) if len(g) > 1 and len(p) else g for p, g in zip(preds, gts)]
        loss_llm, preds = self._teacher_forced(batch, visual, self._answers(batch, gts))
        if not self.options.refinement:  # Table 4's ablation: the polygon is the mask
            return {"loss_llm": loss_llm}
        prior = self.rasterize(preds, refine_feats.device)
        refined = self.refine(refine_feats, prior, (self.image_size,) * 2)["logits"]
        loss_ref = ohem_cross_entropy(
            refined.float(),
            self.refine_target(batch),
            thresh=self.options.ohem_thresh,
            min_kept=self.options.ohem_min_kept,
            ignore_index=IGNORE_PIXEL,
        )
        return {"loss_llm": loss_llm, "loss_ref": loss_ref}

    @staticmethod
    def refine_target(batch: dict) -> torch.Tensor:
        """L_ref's target: 1 in the query mask, 0 outside, 255 (skipped) where query_ignore."""
        target = batch["query_mask"].long()
        if "query_ignore" in batch:
            target = target.masked_fill(batch["query_ignore"].bool(), IGNORE_PIXEL)
        return target

    def rasterize(self, polygons: list, device, size: tuple | None = None) -> torch.Tensor:
        """Per sample (n, V, 2) polygons -> (B, S, S) bool union masks."""
        h, w = size or (self.image_size, self.image_size)
        masks = torch.zeros(len(polygons), h, w, dtype=torch.bool)
        for i, p in enumerate(polygons):
            if len(p):
                masks[i] = rasterize_polygons(p.cpu().double(), h, w).any(0)
        return masks.to(device)

    # ---- inference ---------------------------------------------------------------------------
    def _token_budget(self, batch) -> int:
        """New tokens to generate: the hidden vertices in pretraining, else max_objects objects."""
        tok, size = self.tokenizer, self.image_size
        if "hints" in batch:
            hidden = int((~batch["hints"]).sum(1).max())
            text = format_points(torch.zeros(max(hidden, 1), 2), size, size, self.bins)
            return len(tok(text, add_special_tokens=False)["input_ids"]) + 2
        one = len(
            tok(format_points(torch.zeros(self.vertices, 2), size, size, self.bins), add_special_tokens=False)[
                "input_ids"
            ]
        )
        return (one + 1) * self.options.max_objects + 2

    def _read(self, batch, i, text: str):
        """(polygons (n, V, 2), None or what was dropped and why)."""
        size = self.image_size
        if "hints" in batch:
            hints = batch["hints"][i].cpu()
            poly = torch.as_tensor(batch["query_polygons"][i][0], dtype=torch.float64).cpu().clone()
            try:
                poly[~hints] = parse_points(text, size, size, int((~hints).sum()), self.bins)
            except AnswerError as exc:
                return torch.zeros(0, self.vertices, 2, dtype=torch.float64), str(exc)
            return poly[None], None
        polys, error = read_answer(text, size, size, self.vertices, self.bins)
        stacked = torch.stack(polys) if polys else torch.zeros(0, self.vertices, 2, dtype=torch.float64)
        return stacked, error

    @torch.no_grad()
    def predict(self, batch: dict) -> dict:
        """Generate, parse, rasterize, refine. Returns polygons (per sample (n, V, 2)), texts,
        errors (None, or what the parser dropped and why: every complete polygon is kept),
        polygon_masks and masks (B, S, S) bool, and logits (B, S, S) foreground logits."""
        size = self.image_size
        self.check_vertices(batch)
        visual, refine_feats = self._visual_lists(batch)
        items = [self._embed(self.instruction(batch, i), visual[i], None) for i in range(len(visual))]
        embeds, _, attention = self._pad(items, left=True)
        tok = self.tokenizer
        budget = self._token_budget(batch)
        generated = self.lm.generate(
            inputs_embeds=embeds,
            attention_mask=attention,
            do_sample=False,
            max_new_tokens=budget,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        texts = tok.batch_decode(generated, skip_special_tokens=False)
        polygons, errors = [], []
        for i, (row, text) in enumerate(zip(generated, texts)):
            text = text.split(tok.eos_token)[0].replace(tok.pad_token, " ")
            polys, error = self._read(batch, i, text)
            if error is not None and tok.eos_token_id not in row.tolist():
                error = f"cut at the limit of {budget} new tokens (model.options.max_objects): {error}"
            if error is not None and len(polys):
                log.warning(
                    "segfast: LLaFS answer %d kept %d polygon(s); the rest was dropped: %s", i, len(polys), error
                )
            polygons.append(polys)
            errors.append(error)
        prior = self.rasterize(polygons, refine_feats.device)
        if self.options.refinement:
            logits = self.refine(refine_feats, prior, (size, size))["logits"].float()
        else:  # Table 4's ablation: the rasterized polygon is the answer
            logits = torch.stack([~prior, prior], 1).float()
        return {
            "polygons": polygons,
            "texts": texts,
            "errors": errors,
            "polygon_masks": prior,
            "masks": logits.argmax(1).bool(),
            "logits": logits[:, 1] - logits[:, 0],
        }

    def evaluate(self, batch: dict, meters: dict) -> None:
        """Engine hook: foreground IoU of the refined masks ("iou") and of the LLM's polygons
        ("polygon_iou"); with few-shot episodes (class_ids) also the papers' metric, the mean
        over classes of summed intersections over unions ("fold"; FoldIoU's runs are the
        episode seeds), counted at each label's original size with its 255 pixels ignored."""
        from segfast.models.llafs.scoring import score_fold

        out = self.predict(batch)
        gt = batch["query_mask"].bool()
        meters["iou"].update(out["masks"], gt)
        meters.setdefault("polygon_iou", IoUMeter()).update(out["polygon_masks"], gt)
        if "class_ids" in batch:  # COCO-20i's 80 classes hold PASCAL-5i's 20
            runs = max(batch.get("episode_runs") or [1])
            score_fold(meters.setdefault("fold", FoldIoU(range(1, 81), runs)), out, batch, self.image_size)
