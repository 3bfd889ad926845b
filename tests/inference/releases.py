"""Tiny releases in the authors' layouts, written as their code saves them (no download).

LISA / LaSagnA (LISAForCausalLM, LaSagnAForCausalLM): the modules are built with the classes the
authors' model is made of, under the attribute names their code gives them — LlavaLlamaForCausalLM
is a LlamaForCausalLM (model.embed_tokens, model.layers, model.norm, lm_head) with
model.mm_projector = nn.Linear, model.vision_tower.vision_tower = CLIPVisionModel; LisaMetaModel
adds model.visual_model = a segment-anything Sam and model.text_hidden_fcs = ModuleList([
Sequential(Linear, ReLU, Linear, Dropout)]). Their outputs are the reference the converted
model must reproduce."""

import json

import torch
from torch import nn

from segfast.models.llava import TINY_VISION
from segfast.models.tiny import TINY_LLAMA, word_tokenizer
from segfast.text.lisa import vocabulary

TOWER = "model.vision_tower.vision_tower."


def authors_name(key: str) -> str:
    """The name the authors' transformers (4.x) saved: CLIPVisionModel kept its tower under
    vision_model. (transformers 5 drops that level in memory)."""
    if key.startswith(TOWER) and not key.startswith(TOWER + "vision_model."):
        return TOWER + "vision_model." + key[len(TOWER) :]
    return key


class LisaRelease(nn.Module):
    """The LISA layout at tiny sizes: `self.model` holds what LisaModel holds."""

    def __init__(self, tokens=("[SEG]", "<im_start>", "<im_end>"), seed: int = 1, sam_size: int = 64):
        super().__init__()
        from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

        from segfast.models.sam.build import tiny_sam

        torch.manual_seed(seed)
        self.tokenizer = word_tokenizer(vocabulary())
        self.tokenizer.add_tokens(list(tokens), special_tokens=True)
        self.llama_config = dict(TINY_LLAMA, vocab_size=len(self.tokenizer), max_position_embeddings=512)
        llama = LlamaForCausalLM(LlamaConfig(**self.llama_config))
        self.model = llama.model
        self.lm_head = llama.lm_head
        self.clip_config = CLIPVisionConfig(**TINY_VISION)
        self.model.vision_tower = nn.Module()
        self.model.vision_tower.vision_tower = CLIPVisionModel(self.clip_config)
        d = self.llama_config["hidden_size"]
        self.model.mm_projector = nn.Linear(TINY_VISION["hidden_size"], d)
        self.model.visual_model = tiny_sam(image_size=sam_size, seed=seed)
        fc = [nn.Linear(d, d), nn.ReLU(inplace=True), nn.Linear(d, 32), nn.Dropout(0.0)]
        self.model.text_hidden_fcs = nn.ModuleList([nn.Sequential(*fc)])
        with torch.no_grad():  # a SAM decoder and MLP away from their initialisation
            for p in [*self.model.visual_model.mask_decoder.parameters(), *self.model.text_hidden_fcs.parameters()]:
                p.add_(torch.randn_like(p) * 0.05)
        self.eval()

    # ---- the reference computations (the authors' forward, module by module) -------------------
    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.model(input_ids=ids).last_hidden_state)

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """LLaVA's encode_images: CLIP's hidden state at mm_vision_select_layer (-2), patches only."""
        hidden = self.model.vision_tower.vision_tower(pixels, output_hidden_states=True).hidden_states[-2]
        return self.model.mm_projector(hidden[:, 1:])

    def config(self) -> dict:
        return {
            "architectures": ["LISAForCausalLM"],
            "model_type": "llava",
            **self.llama_config,
            "hidden_act": "silu",
            "rms_norm_eps": 1e-6,
            "mm_vision_tower": "openai/clip-vit-large-patch14",
            "mm_hidden_size": TINY_VISION["hidden_size"],
            "mm_vision_select_layer": -2,
            "mm_vision_select_feature": "patch",
            "mm_use_im_start_end": True,
            "out_dim": 32,
            "train_mask_decoder": True,
        }

    def save(self, directory, fmt: str = "safetensors", shards: int = 2, drop=(), extra=None):
        """As save_pretrained writes it: config.json, the tokenizer and `shards` weight files with
        their index (fmt "safetensors" or "bin"); `drop` leaves keys out, `extra` adds some."""
        from safetensors.torch import save_file

        directory.mkdir(parents=True, exist_ok=True)
        state = {authors_name(k): v.detach().clone().contiguous() for k, v in self.state_dict().items()}
        state = {k: v for k, v in state.items() if k not in drop}
        state.update(extra or {})
        keys = sorted(state)
        suffix = "safetensors" if fmt == "safetensors" else "bin"
        stem = "model" if fmt == "safetensors" else "pytorch_model"
        weight_map = {}
        for i in range(shards):
            name = f"{stem}-{i + 1:05d}-of-{shards:05d}.{suffix}"
            part = {k: state[k] for k in keys[i::shards]}
            weight_map.update(dict.fromkeys(part, name))
            if fmt == "safetensors":
                save_file(part, str(directory / name), metadata={"format": "pt"})
            else:
                torch.save(part, directory / name)
        index = f"{stem}.{suffix}.index.json"
        (directory / index).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
        (directory / "config.json").write_text(json.dumps(self.config()))
        self.tokenizer.save_pretrained(str(directory))
        return directory

    def save_clip(self, directory, seed: int = 5):
        """The CLIP tower the config names, as a local copy (another random one: the release's own
        tower weights must win over it)."""
        from transformers import CLIPVisionModel

        torch.manual_seed(seed)
        CLIPVisionModel(self.clip_config).save_pretrained(str(directory))
        return directory
