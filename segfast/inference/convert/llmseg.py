"""LLM-Seg's release (wangjunchi/LLMSeg; huggingface JCdesu/LLM-Seg-deepspeed, -10epoch) -> a
segfast checkpoint.

The release is a DeepSpeed checkpoint, what training.py's model_engine.save_checkpoint writes:
<dir>/latest (a text file naming global_stepN) and <dir>/global_stepN/mp_rank_00_model_states.pt,
a torch pickle whose "module" entry is the whole model's state dict, frozen weights included
(optimizer states sit in other files and are not read). `--from` may name the directory with
`latest`, the global_step directory or the .pt file. The model is LISAForCausalLM (model/LISA.py)
wrapped by peft (training.py: LoRA r 8, alpha 16 on the Llama layers' q_proj / v_proj), so
every key starts with base_model.model.:

    model.embed_tokens, model.layers.*, model.norm, lm_head      Llama (trained: embed_tokens, lm_head)
      ...q_proj.weight + q_proj.lora_A.default.weight + q_proj.lora_B.default.weight
                                                                  (peft 0.4's names; newer peft adds
                                                                  .base_layer before .weight)
    model.mm_projector.{weight,bias}                              LLaVA v1's linear projector (frozen)
    model.vision_tower.vision_tower.vision_model.*                CLIP ViT-L/14 (frozen)
    model.visual_model.*                                          SAM ViT-H (frozen; LLM-Seg's model
                                                                  never runs it: its everything-mode
                                                                  proposals are made offline)
    model.visual_model_dinov2.*                                   DINOv2 ViT-L/14, torch.hub's names
    model.text_hidden_fcs.0.{0,2}.*                               [SEG] MLP          -> text_fc
    model.lisa_dino_conv.*                                        Conv2d 1024->256   -> project
    model.lisa_attention_layers.{i}.*                             LISA_TwoWayAttentionBlock x 2
                                                                                     -> fusion.blocks.{i}
    model.lisa_final_attn.*, model.lisa_norm_final_attn.*         -> fusion.final_attn, fusion.norm_final
    model.lisa_embedding_head.{0,2}.*  (256-2048-256)             -> embedding_head
    model.lisa_iou_head.{0,2}.*        (256-128-1, sigmoid)       -> iop_head (iop_hidden from its shape)

LoRA is merged as peft merges it: W + B @ A * alpha / r (r from lora_A's rows; alpha is not saved:
training.py's default 16, which no script of the release overrides). The release holds no
config.json and no tokenizer: they come from `--llava`, the base LLaVA directory training.py's
--version names (LLaVA-Lightning-7B-v1), whose tokenizer gets what init_tokenizer adds ([SEG],
then <im_start> <im_end>); `--clip` gives the CLIP tower's configuration as for LISA. DINOv2's
configuration is read from the shapes (DINOv2's ViTs all use 64-wide heads) unless `--dinov2`
names a transformers Dinov2Model (also the weights' source when the release lacks them).

Written to <out>: llava/ and sam.pth as llava_sam writes them, dinov2-model/ (transformers'
Dinov2Model), the segfast checkpoint (config.yaml, trainable.safetensors, conversion.json,
manifest.json) and inference.json naming sam.pth as the proposal SAM (relative: segfast.load
reads it beside the checkpoint, so the folder can be moved).
"""

import re
from pathlib import Path

import torch

from segfast.inference.convert.llava_sam import LISA_LORA, SYSTEM_V1, Source, sam_weights, write_llava
from segfast.inference.convert.report import ConversionError, Report

PEFT = "base_model.model."  # peft's PeftModelForCausalLM -> LoraModel -> LISAForCausalLM
STATES = "mp_rank_00_model_states.pt"
AUTHORS_LORA_ALPHA = 16  # training.py --lora_alpha default (scripts/*.sh keep it)
LORA = re.compile(r"^(.*)\.lora_A\.([^.]+)\.weight$")
# the authors' modules (model/LISA.py initialize_lisa_modules) -> segfast's llm-seg modules
HEADS = {
    "model.lisa_dino_conv.": "project.",
    "model.text_hidden_fcs.0.": "text_fc.",
    "model.lisa_attention_layers.": "fusion.blocks.",
    "model.lisa_final_attn.": "fusion.final_attn.",
    "model.lisa_norm_final_attn.": "fusion.norm_final.",
    "model.lisa_embedding_head.": "embedding_head.",
    "model.lisa_iou_head.": "iop_head.",
}
DINO = "model.visual_model_dinov2."
DINO_DIR = "dinov2-model"  # not "dinov2": local_paths would take backbone=dinov2 for this folder
# torch.hub DINOv2 (facebookresearch/dinov2 vision_transformer.py) -> transformers' Dinov2Model,
# each with the names transformers 4 and 5 give it
DINO_NAMES = {
    "cls_token": ["embeddings.cls_token"],
    "mask_token": ["embeddings.mask_token"],
    "pos_embed": ["embeddings.position_embeddings"],
    "patch_embed.proj.": ["embeddings.patch_embeddings.projection."],
    "norm.": ["layernorm."],
}
DINO_BLOCK = {
    "norm1.": ["norm1."],
    "norm2.": ["norm2."],
    "attn.proj.": ["attention.o_proj.", "attention.output.dense."],
    "ls1.gamma": ["layer_scale1.lambda1"],
    "ls2.gamma": ["layer_scale2.lambda1"],
    "mlp.fc1.": ["mlp.fc1."],
    "mlp.fc2.": ["mlp.fc2."],
}
DINO_QKV = (["attention.q_proj.", "attention.attention.query."], ["attention.k_proj.", "attention.attention.key."])
DINO_QKV += (["attention.v_proj.", "attention.attention.value."],)


def states_file(source) -> Path:
    """The model-states file of a DeepSpeed checkpoint: `source` itself, the global_step
    directory holding it, or the directory whose `latest` names that one."""
    path = Path(source)
    if path.is_file():
        return path
    if (path / "latest").is_file():
        path = path / (path / "latest").read_text().strip()
    if (path / STATES).is_file():
        if (path / STATES.replace("00", "01")).is_file():
            raise ConversionError(f"--from: {path} is model-parallel (mp_rank_01 too); the release is not")
        return path / STATES
    raise FileNotFoundError(
        f"--from: {source} is neither a DeepSpeed model-states file, a global_step directory holding {STATES}, "
        "nor a checkpoint directory whose `latest` names one"
    )


def load_module(path: Path) -> dict:
    """The "module" state dict, loaded with weights_only=True: a DeepSpeed states file holds
    tensors, numbers, strings, torch.Size and dicts only (ds_config, param_shapes, ...)."""
    import pickle

    try:
        states = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:
        lines = str(exc).splitlines()
        detail = next((line.strip() for line in lines if "Unsupported global" in line), lines[0])
        raise ConversionError(
            f"--from: {path} holds objects torch.load(weights_only=True) refuses, so it is not read "
            f"(unpickling them could run code): {detail}"
        ) from None
    if not isinstance(states, dict) or "module" not in states:
        raise ConversionError(f"--from: {path} has no 'module' entry (not a DeepSpeed model-states file)")
    return states["module"]


class Release:
    """The release's tensors under the names LISAForCausalLM gives them (peft's prefix dropped),
    LoRA merged into its base weights; origins[name]: the release keys it is made of."""

    def __init__(self, module: dict, report: Report):
        self.module, self.origins, self.scales, ranks = module, {}, {}, set()
        lora = {}
        for key in module:
            found = LORA.match(key)
            if found:
                lora[found.group(1)] = found.group(2)
        for key in module:
            if ".lora_A." in key or ".lora_B." in key:
                continue
            base = key.removesuffix(".weight").removesuffix(".base_layer")
            name = key.removeprefix(PEFT).replace(".base_layer.", ".")
            self.origins[name] = [key]
            if key.endswith(".weight") and base in lora:
                adapter = f"{base}.lora_{{}}.{lora[base]}.weight"
                self.origins[name] += [adapter.format("A"), adapter.format("B")]
                r = module[adapter.format("A")].shape[0]
                self.scales[name] = AUTHORS_LORA_ALPHA / r
                ranks.add(r)
        if self.scales:
            report.notes.append(
                f"LoRA merged into {len(self.scales)} weights: W + B @ A * alpha / r, r {sorted(ranks)} from the "
                f"adapters, alpha {AUTHORS_LORA_ALPHA} (training.py's default; the checkpoint does not save it)"
            )

    def keys(self) -> list:
        return list(self.origins)

    def __contains__(self, key: str) -> bool:
        return key in self.origins

    def __getitem__(self, key: str) -> torch.Tensor:
        tensor = self.module[self.origins[key][0]]
        if key not in self.scales:
            return tensor
        a, b = (self.module[k].float() for k in self.origins[key][1:])
        return (tensor.float() + (b @ a) * self.scales[key]).to(tensor.dtype)


class ReleaseSource(Source):
    """Source over a Release: the report names the release's own keys (a merged weight's three)."""

    def take(self, key: str, target: str) -> torch.Tensor:
        tensor = self.weights[key]
        for origin in self.weights.origins[key]:
            self.report.map(origin, target, self.weights.module[origin])
        self.used.update(self.weights.origins[key])
        return tensor

    def finish(self) -> None:
        self.report.unused = sorted(set(self.weights.module) - self.used)


def llava_tokenizer(llava, rows: int):
    """The base LLaVA's tokenizer with what training.py's init_tokenizer adds, checked against
    the release's embedding rows."""
    from transformers import AutoTokenizer

    from segfast.text.tokens import SEG

    tokenizer = AutoTokenizer.from_pretrained(str(llava))
    tokenizer.add_tokens(SEG)
    tokenizer.add_tokens(["<im_start>", "<im_end>"], special_tokens=True)  # use_mm_start_end (True)
    if len(tokenizer) != rows:
        raise ConversionError(
            f"--llava: {llava}'s tokenizer with [SEG], <im_start>, <im_end> added has {len(tokenizer)} tokens, "
            f"the release's embedding {rows} rows: pass the base LLaVA the release was trained from"
        )
    return tokenizer


def base_config(llava) -> dict:
    import json

    if llava is None:
        raise ConversionError(
            "--llava is required: the release holds no config.json or tokenizer; pass the base LLaVA directory "
            "training.py's --version names (LLaVA-Lightning-7B-v1)"
        )
    path = Path(llava) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"--llava: {llava} has no config.json")
    return json.loads(path.read_text())


def _place(own: dict, prefix: str, candidates: list, rest: str) -> str:
    for c in candidates:
        if prefix + c + rest in own:
            return prefix + c + rest
    raise ConversionError(f"cannot place DINOv2's {candidates[0]}{rest} in this transformers version's Dinov2Model")


def dinov2_weights(src: ReleaseSource, own: dict) -> dict:
    """transformers' Dinov2Model state from the release's torch.hub DINOv2 (qkv split in three)."""
    out = {}
    for key in src.keys(DINO):
        hub = key[len(DINO) :]
        block = re.match(r"^blocks\.(\d+)\.(.*)$", hub)
        table, prefix, name = (DINO_NAMES, "", hub)
        if block:
            table, prefix, name = DINO_BLOCK, f"encoder.layer.{block.group(1)}.", block.group(2)
        if block and name.startswith("attn.qkv."):
            rest = name[len("attn.qkv.") :]
            targets = [_place(own, prefix, c, rest) for c in DINO_QKV]
            for target, part in zip(targets, src.take(key, " ".join(targets)).chunk(3)):
                out[target] = part
            continue
        for stem, candidates in table.items():
            if name == stem or (stem.endswith(".") and name.startswith(stem)):
                target = _place(own, prefix, candidates, name[len(stem) :])
                out[target] = src.take(key, target)
                break
    return out


def dinov2_config(src: ReleaseSource):
    """Dinov2Config from the hub weights' shapes."""
    from transformers import Dinov2Config

    patch = src.weights[DINO + "patch_embed.proj.weight"]
    width, blocks = patch.shape[0], {k[len(DINO) :].split(".")[1] for k in src.keys(DINO + "blocks.")}
    grid = int(round((src.weights[DINO + "pos_embed"].shape[1] - 1) ** 0.5))
    return Dinov2Config(
        hidden_size=width,
        num_hidden_layers=len(blocks),
        num_attention_heads=max(1, width // 64),
        mlp_ratio=src.weights[DINO + "blocks.0.mlp.fc1.weight"].shape[0] // width,
        patch_size=patch.shape[-1],
        num_channels=patch.shape[1],
        image_size=grid * patch.shape[-1],
    )


def write_dinov2(src: ReleaseSource, directory: Path, dinov2) -> None:
    from transformers import Dinov2Config, Dinov2Model

    if not src.keys(DINO):
        if dinov2 is None:
            raise ConversionError(f"--dinov2 is required: the release holds no DINOv2 ({DINO}*)")
        Dinov2Model.from_pretrained(str(dinov2)).save_pretrained(str(directory))
        src.report.notes.append(f"DINOv2 weights from --dinov2 {dinov2} (the release does not hold them)")
        return
    config = Dinov2Config.from_pretrained(str(dinov2)) if dinov2 is not None else dinov2_config(src)
    if dinov2 is None:
        src.report.notes.append(f"DINOv2 configuration from the weights' shapes, {config.num_attention_heads} heads")
    with torch.device("meta"):
        model = Dinov2Model(config)
    own = model.state_dict()
    out = dinov2_weights(src, own)
    src.report.fit(out, own, "DINOv2's configuration", name=lambda k: f"dinov2/{k}")
    model.load_state_dict(out, strict=True, assign=True)
    model.save_pretrained(str(directory))


def head_weights(src: ReleaseSource) -> dict:
    """segfast name -> tensor for the modules LLM-Seg adds to LISA (HEADS)."""
    return {
        target + key[len(prefix) :]: src.take(key, target + key[len(prefix) :])
        for prefix, target in HEADS.items()
        for key in src.keys(prefix)
    }


def authors_name(target: str) -> str:
    """The release key (peft's prefix dropped) of a segfast head parameter."""
    prefix, theirs = next((t, p) for p, t in HEADS.items() if target.startswith(t))
    return theirs + target[len(prefix) :]


def head_options(heads: dict, report: Report) -> dict:
    """The llm-seg options the heads' shapes fix (fusion_heads is not in a shape: model/LISA.py's 8)."""
    from segfast.models.llmseg.options import LLMSegOptions

    shaped = ("project.weight", "embedding_head.0.weight", "iop_head.0.weight", "fusion.blocks.0.mlp.lin1.weight")
    report.missing += [PEFT + authors_name(k) for k in shaped if k not in heads]
    report.check()
    options = {
        "dim": heads["project.weight"].shape[0],
        "embedding_hidden": heads["embedding_head.0.weight"].shape[0],
        "iop_hidden": heads["iop_head.0.weight"].shape[0],
        "fusion_blocks": len({k.split(".")[2] for k in heads if k.startswith("fusion.blocks.")}),
        "fusion_mlp": heads["fusion.blocks.0.mlp.lin1.weight"].shape[0],
        "fusion_heads": 8,
    }
    default = LLMSegOptions().iop_hidden
    if options["iop_hidden"] != default:
        report.notes.append(
            f"iop_hidden={options['iop_hidden']} (lisa_iou_head.0.weight, the authors' code); "
            f"the option's default is the paper's {default}"
        )
    return options


def load_heads(model, heads: dict, report: Report) -> None:
    """The heads into the segfast model, every parameter of those modules accounted for."""
    own = {k: v for k, v in model.state_dict().items() if k.startswith(tuple(HEADS.values()))}
    report.fit(heads, own, "the llm-seg model", name=lambda k: f"{PEFT}{authors_name(k)} (for {k})")
    model.load_state_dict(heads, strict=False)


def convert(system: str, source, out, clip=None, llava=None, dinov2=None) -> Report:
    """The release in `source` as a segfast checkpoint in `out` (see the module doc)."""
    import json

    from segfast.config import load_config
    from segfast.inference.predictor import SETTINGS, local_paths
    from segfast.io import save_torch
    from segfast.registry import system as registered
    from segfast.train.checkpoint import save_trained

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"--out: {out} exists and is not empty")
    config = base_config(llava)
    path = states_file(source)
    report = Report(system, str(path))
    src = ReleaseSource(Release(load_module(path), report), report)
    heads = head_weights(src)
    options = head_options(heads, report)
    embed = "model.embed_tokens.weight"
    if embed not in src.weights:
        report.missing.append(PEFT + embed)
    report.check()
    tokenizer = llava_tokenizer(llava, src.weights[embed].shape[0])
    sam, sam_type, _ = sam_weights(src)
    src.report.check()
    save_torch(sam, out / "sam.pth")
    write_dinov2(src, out / DINO_DIR, dinov2)
    write_llava(src, config, out / "llava", clip, tokenizer)
    # training.py: DINOv2 at 896, llava_v1's system line, use_mm_start_end on
    options.update(backbone="dinov2", dinov2_path=DINO_DIR, image_size=896, system=SYSTEM_V1, image_start_end="on")
    segfast_config = {
        "model": {"name": system, "path": "llava", "lora": LISA_LORA, "options": options},
        "run": {"seed": 0},
    }
    cfg = load_config(base=segfast_config, overrides=local_paths(out, segfast_config["model"]))
    torch.manual_seed(0)
    model = registered(system).model(cfg.model, torch.device("cpu"))
    load_heads(model, heads, report)
    src.finish()
    print(report.summary())
    report.write(out)
    # the release's own SAM makes the proposals; 50 largest as the authors' prepare_datasets keep
    settings = {"sam_type": sam_type, "sam_checkpoint": "sam.pth", "max_proposals": 50}
    (out / SETTINGS).write_text(json.dumps(settings, indent=1))
    save_trained(model, segfast_config, out)
    return report
