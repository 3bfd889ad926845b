"""LLaVASeg: chain-of-thought prompts and parsing on fixed generations, the MLLM's prompt
embeddings, zero-initialised language-aware adapters, a training step that leaves the MLLM
untouched, the resumable chain-of-thought cache, data layouts and segfast.train."""

import copy
import json

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("segment_anything")

from segfast.config import ConfigError, LoraConfig, ModelConfig  # noqa: E402
from segfast.data.cot_cache import CacheWriter, read_cache  # noqa: E402
from segfast.data.queries import SegQueries  # noqa: E402
from segfast.jobs.cot_cache import cache_chain_of_thought  # noqa: E402
from segfast.models.llavaseg.adapters import LanguageAdapters, global_layers  # noqa: E402
from segfast.models.llavaseg.prompts import (  # noqa: E402
    Templates,
    parse_guided,
    parse_target,
    reason_question,
    simulated_answer,
)
from segfast.train import load_config  # noqa: E402
from tests.models.seg_family import batch_of, saved_weights, write_refer  # noqa: E402

SMALL = {"adapter_dim": 16, "adapter_heads": 2, "max_new_tokens": 12}


def _model(path: str = "", **options):
    from segfast.models.llavaseg.model import LLaVASeg

    torch.manual_seed(0)
    return LLaVASeg(
        ModelConfig(name="llavaseg", path=path, lora=LoraConfig(enabled=False), options={**SMALL, **options})
    )


def _scripted(chain, replies: dict):
    """Replaces the MLLM's generation with fixed answers chosen by the last question's start;
    records every conversation it was asked."""
    asked = []

    def answer(conversations, feats):
        assert len(feats) == len(conversations)
        asked.extend(copy.deepcopy(conversations))  # the chain fills the answers in later
        return [
            next(v for k, v in replies.items() if c[-1]["question"].replace("<image> ", "").startswith(k))
            for c in conversations
        ]

    chain.answer = answer
    return asked


# ---- prompts ---------------------------------------------------------------------------------------
PAPER = {  # LLaVASeg §3.2, verbatim
    "reason": "What is the object or part that is [USER QUERY] in this image?",
    "target": "Please analyze the conversation and identify the distinct physical objects or areas that the user "
    "wants from the image.",
    "attributes": "Briefly describe the target entity or part's visual attributes that can discriminate them from "
    "the image. Each visual attribute can be color, shape, and relative position to other objects in the image.",
}


def test_the_papers_prompts_are_the_default_templates():
    t = Templates()
    assert t.reason.replace("{query}", "[USER QUERY]") == PAPER["reason"]
    assert (
        t.target
        == f"Here is the conversation:\nThe question is: {{question}}\nThe answer is: {{answer}}\n{PAPER['target']}"
    )
    assert t.attributes == f"Here is the target:\nThe target is: {{target}}\n{PAPER['attributes']}"
    assert t.merged.endswith(f"Follow these guidelines strictly: (1) {PAPER['target']} (2) {PAPER['attributes']}")
    assert t.merged.startswith("Here is the conversation:\nThe question is: {question}\nThe answer is: {answer}\n")
    assert (
        reason_question("the thing used to cut bread.", t)
        == "What is the object or part that is the thing used to cut bread in this image?"
    )
    assert reason_question("What can I sit on? ", t) == "What can I sit on?"  # a question is asked as is
    keys = [f"img{i}\tman" for i in range(40)]  # the simulated answer is a function of the key
    assert [simulated_answer("man", k, t) for k in keys] == [simulated_answer("man", k, t) for k in keys]
    assert len({simulated_answer("man", k, t) for k in keys}) == len(t.simulated)
    with pytest.raises(ValueError, match="unknown templates"):
        Templates.of({"reasons": "x"})
    assert Templates.of({"target": "Name it."}).target == "Name it."


def test_parsing_the_papers_answers():
    fig4 = (
        "(1) The target entity in the image is the piano bench. (2) The bench is located in front of the piano, "
        "and it is black in color."
    )
    assert parse_guided(fig4) == {
        "target": "piano bench",
        "attributes": "The bench is located in front of the piano, and it is black in color",
        "parsed": True,
    }
    spaced = "1 . the user wants the red box from the image . 2 . red , square , on the left ."
    assert parse_guided(spaced) == {"target": "red box", "attributes": "red, square, on the left", "parsed": True}
    unmarked = parse_guided("The target is the wedding ring. It is circular and made of metal.")
    assert unmarked == {"target": "wedding ring", "attributes": "It is circular and made of metal", "parsed": False}
    assert parse_target("The user wants the fire from the image.") == "fire"
    assert parse_target("It is the red box. It is on the left.") == "red box"
    assert parse_target("dog") == "dog"


def test_the_default_chain_asks_step_1_alone_then_steps_2_and_3_in_one_round():
    model = _model()
    t = model.chain.templates
    replies = {
        "which box is red?": "It is the red box, since it is red.",
        "Here is the conversation": "(1) The user wants the red box. (2) Red, big, on the left.",
    }
    asked = _scripted(model.chain, replies)
    clips = torch.zeros(2, 3, 32, 32)
    records = model.chain.run(clips, ["which box is red?", "blue box"], ["reasoning", "short"], ["a", "b"])
    questions = [c[0]["question"] for c in asked]
    assert [len(c) for c in asked] == [1, 1, 1]  # every step its own conversation with the image
    assert questions[0] == "<image> which box is red?"  # step 1 alone: nothing appended (Table 1 scores it)
    simulated = simulated_answer("blue box", "b", t)
    assert questions[1:] == [
        "<image> " + t.merged.format(question="which box is red?", answer="It is the red box, since it is red."),
        "<image> " + t.merged.format(question=reason_question("blue box", t), answer=simulated),
    ]
    assert records[0]["reason"] == "It is the red box, since it is red." and records[1]["reason"] == simulated
    assert [r["target"] for r in records] == ["red box", "red box"] and all(r["parsed"] for r in records)
    assert records[0]["attributes"] == "Red, big, on the left"
    assert model.chain.prompt_text(records[0]) == "red box. Red, big, on the left"
    assert [len(r["dialogue"]) for r in records] == [2, 2]

    separate = _model(merged=False)
    asked = _scripted(
        separate.chain, {**replies, "Here is the conversation": "The green box.", "Here is the target": "green, left."}
    )
    records = separate.chain.run(clips, ["which box is red?", "blue box"], ["reasoning", "short"], ["a", "b"])
    assert [c[0]["question"].split("\n")[0] for c in asked] == [
        "<image> which box is red?",
        "<image> Here is the conversation:",
        "<image> Here is the conversation:",
        "<image> Here is the target:",
        "<image> Here is the target:",
    ]
    assert asked[1][0]["question"].endswith(PAPER["target"])  # step 2 alone
    assert asked[3][0]["question"] == "<image> " + t.attributes.format(target="green box")  # the parsed target
    assert [r["target"] for r in records] == ["green box"] * 2 and records[0]["attributes"] == "green, left."

    one = _model(steps=1)  # Table 3a: the reason step's answer prompts the segmenter
    asked = _scripted(one.chain, replies)
    records = one.chain.run(clips, ["which box is red?", "blue box"], ["reasoning", "short"], ["a", "b"])
    assert len(asked) == 1 and one.chain.prompt_text(records[0]) == "It is the red box, since it is red"
    two = _model(steps=2)
    asked = _scripted(two.chain, {**replies, "Here is the conversation": "The user wants the red box."})
    records = two.chain.run(clips, ["which box is red?", "blue box"], ["reasoning", "short"], ["a", "b"])
    assert asked[1][0]["question"].endswith(PAPER["target"]) and two.chain.prompt_text(records[0]) == "red box"
    with pytest.raises(ValueError, match="steps"):
        _model(steps=4)
    _scripted(model.chain, {"": "nothing useful"})  # unparsable: the query or the reason names the target
    records = model.chain.run(clips, ["which box is red?", "blue box"], ["reasoning", "short"], ["a", "b"])
    assert [r["target"] for r in records] == ["nothing useful", "nothing useful"] and not any(
        r["parsed"] for r in records
    )
    with pytest.raises(ValueError, match="kind"):
        model.chain.run(clips[:1], ["x"], ["long"], ["k"])


def test_prompt_embeddings_come_from_the_frozen_mllm_and_ignore_padding():
    model = _model()
    chain, tok = model.chain, model.chain.tokenizer
    texts = ["red box. red", "the blue box on the left. blue, small"]
    embeddings, mask = chain.prompt_embeddings(texts)
    assert mask.sum(1).tolist() == [len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
    for b, text in enumerate(texts):  # each alone (no padding) gives the same states
        ids = torch.tensor([[tok.bos_token_id] + tok(text, add_special_tokens=False)["input_ids"]])
        alone = chain.lm.model.language_model(input_ids=ids).last_hidden_state[0, 1:]
        torch.testing.assert_close(embeddings[b][mask[b]], alone, atol=1e-5, rtol=1e-5)
    rows = _model(prompt_features="input").chain.prompt_embeddings(texts)[0]
    ids = tok(texts[0], add_special_tokens=False)["input_ids"]
    torch.testing.assert_close(rows[0, : len(ids)], chain.lm.get_input_embeddings().weight[ids])
    with pytest.raises(ValueError, match="prompt_features"):
        _model(prompt_features="cls")


# ---- adapters --------------------------------------------------------------------------------------
def test_zero_initialised_adapters_leave_sams_encoder_output_unchanged():
    from segfast.models.sam.build import tiny_sam

    encoder = tiny_sam(image_size=64, dim=32).image_encoder.requires_grad_(False)  # frozen, as in the model
    assert global_layers(encoder) == [1]
    adapters = LanguageAdapters(encoder, [0, 1], text_dim=24, inner=16, heads=2)
    gen = torch.Generator().manual_seed(1)
    images, text = torch.randn(2, 3, 64, 64, generator=gen), torch.randn(2, 5, 24, generator=gen)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    with torch.no_grad():
        original = encoder(images)
    torch.testing.assert_close(adapters(encoder, images, text, mask), original, atol=0, rtol=0)
    for adapter in adapters.adapters.values():  # a trained output projection moves it, text-dependently
        torch.nn.init.normal_(adapter.out.weight, std=0.1, generator=gen)
    moved = adapters(encoder, images, text, mask)
    assert (moved - original).abs().max() > 1e-3
    other = text.clone()
    other[0, 3:] = 100.0  # padding positions do not matter ...
    torch.testing.assert_close(adapters(encoder, images, other, mask)[0], moved[0])
    other[0, 0] = 100.0  # ... real tokens do
    assert (adapters(encoder, images, other, mask)[0] - moved[0]).abs().max() > 1e-4
    # activation checkpointing of the frozen blocks: same values and gradients
    grads = []
    for checkpointing in (False, True):
        adapters.checkpointing = checkpointing
        adapters.zero_grad()
        adapters(encoder, images, text, mask).square().sum().backward()
        grads.append([p.grad.clone() for p in adapters.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
    assert all(p.grad is None for p in encoder.parameters())
    with pytest.raises(ValueError, match="adapter_layers"):
        LanguageAdapters(encoder, [2], 24, 16, 2)


# ---- training ----------------------------------------------------------------------------------------
def _snapshot(module) -> dict:
    return {n: p.detach().clone() for n, p in module.state_dict().items()}


def test_training_steps_touch_only_adapters_mlp_and_decoder():
    model = _model(adapter_layers=[0, 1])
    batch = batch_of(SegQueries(length=4), 2)
    frozen = {
        "chain": _snapshot(model.chain),
        "encoder": _snapshot(model.decoder.sam.image_encoder),
        "prompt_encoder": _snapshot(model.decoder.sam.prompt_encoder),
    }
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(
        n.startswith(("adapters.", "text_mlp.", "to_prompt.", "decoder.sam.mask_decoder.")) for n in trainable
    )
    assert not any(n.startswith("decoder.sam.mask_decoder.iou_prediction_head") for n in trainable)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    assert not model.chain.lm.training and not model.decoder.sam.image_encoder.training
    reached = set()
    for _ in range(2):
        optimizer.zero_grad()
        losses = model(batch)
        assert set(losses) == {"bce", "dice"}
        sum(losses.values()).backward()
        assert all(p.grad is None for p in model.chain.parameters())  # the MLLM never receives gradients
        reached |= {
            n.split(".")[0] + ("." + n.split(".")[2] if n.startswith("adapters") else "")
            for n, p in model.named_parameters()
            if p.grad is not None and p.grad.abs().sum() > 0
        }
        optimizer.step()
    # step 1 reaches the zero-initialised output projections; step 2 everything behind them
    assert {"adapters.0", "adapters.1", "text_mlp", "to_prompt", "decoder"} <= reached
    adapter = model.adapters.adapters["0"]
    assert adapter.q.weight.grad.abs().sum() > 0 and adapter.kv.weight.grad.abs().sum() > 0
    for name, module in (
        ("chain", model.chain),
        ("encoder", model.decoder.sam.image_encoder),
        ("prompt_encoder", model.decoder.sam.prompt_encoder),
    ):
        for key, value in _snapshot(module).items():
            assert torch.equal(value, frozen[name][key]), f"{name}.{key} changed"


def test_half_precision_mllm_under_bf16_autocast():
    """A 7B checkpoint loads in its stored half precision while SAM stays fp32: the prompt
    embeddings, image features and adapters meet across dtypes (CPU autocast stands in for CUDA)."""
    model = _model()
    model.chain.lm.to(torch.bfloat16)
    batch = batch_of(SegQueries(length=4), 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model(batch)
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_lora_is_refused_and_loss_weights_are_the_papers():
    from segfast.models.llavaseg.model import LLaVASeg
    from segfast.models.llavaseg.options import LLaVASegOptions

    assert (LLaVASegOptions().lambda_bce, LLaVASegOptions().lambda_dice) == (1.0, 0.5)
    with pytest.raises(ConfigError, match="frozen"):
        LLaVASeg(ModelConfig(name="llavaseg", lora=LoraConfig(enabled=True)))
    cfg = load_config(base={"model": {"name": "llavaseg"}})
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.model.lora.enabled) == (1e-4, 1e-4, False)
    assert load_config(base={"model": {"name": "llavaseg"}, "optim": {"lr": 3e-4}}).optim.lr == 3e-4


def test_segment_returns_the_reason_answer_with_the_mask():
    model = _model().eval()
    _scripted(
        model.chain,
        {
            "which": "The red box is the one you mean.",
            "Here is the conversation:\nThe question is: which": "(1) The red box. (2) red.",
            "": "(1) The blue box. (2) blue.",
        },
    )
    ds = SegQueries(length=4)
    batch = batch_of(ds, 2)
    out = model.segment(batch)
    assert [o["answer"] for o in out] == [
        simulated_answer(batch["query"][0], batch["key"][0], model.chain.templates),
        "The red box is the one you mean.",
    ]
    assert [o["target"] for o in out] == ["blue box", "red box"]
    for o, (h, w) in zip(out, batch["valid_size"].tolist()):
        assert o["mask"].shape == (h, w) and o["mask"].dtype == torch.bool and o["logits"].shape == (64, 64)
        assert torch.equal(o["mask"], o["logits"][:h, :w] > 0)


# ---- data and cache -----------------------------------------------------------------------------------
def test_reasonseg_refcoco_and_synthetic_queries(tmp_path):
    image = np.zeros((40, 60, 3), np.uint8)
    (tmp_path / "rs" / "val").mkdir(parents=True)
    Image.fromarray(image).save(tmp_path / "rs" / "val" / "a.jpg")
    (tmp_path / "rs" / "val" / "a.json").write_text(
        json.dumps(
            {
                "text": ["what holds the drink?", "the cup"],
                "is_sentence": True,
                "shapes": [{"label": "target", "points": [[0, 0], [30, 0], [30, 20], [0, 20]]}],
            }
        )
    )
    rs = SegQueries("reasonseg", str(tmp_path / "rs"), split="val")  # read as training data: every query
    assert len(rs) == 2 and [rs.request(i)["query"] for i in range(2)] == ["what holds the drink?", "the cup"]
    rs = SegQueries("reasonseg", str(tmp_path / "rs"), split="eval")  # the benchmark reads val's text[0]
    assert len(rs) == 1 and rs.request(0)["query"] == "what holds the drink?"
    sample = rs[0]
    # LISA's get_mask_from_json draws the outline too: rows 0-20, columns 0-30
    assert sample["original_masks"].shape == (1, 40, 60) and int(sample["original_masks"][0].sum()) == 21 * 31
    assert sample["kind"] == "reasoning" and sample["key"] == "a.jpg\twhat holds the drink?"
    assert (
        sample["masks"].shape == (1, 64, 64)
        and sample["masks"][0, :23, :34].all()
        and not sample["masks"][0, 23:].any()
    )
    write_refer(
        tmp_path / "rc",
        image,
        [{"split": "train", "ann_id": 7, "image_id": 1, "sentences": [{"sent": "left"}, {"sent": "dark one"}]}],
        [{"id": 7, "segmentation": [[0, 0, 30, 0, 30, 40, 0, 40]]}],
    )
    rc = SegQueries("refcoco", str(tmp_path / "rc"))
    assert [rc.request(i)["kind"] for i in range(len(rc))] == ["short", "short"]
    syn = SegQueries(length=4)
    assert [syn.request(i)["kind"] for i in range(4)] == ["short", "reasoning"] * 2
    assert syn.request(1)["query"].endswith("?") and syn.request(1) == syn.request(1)
    assert SegQueries(length=4, split="eval").request(0)["key"] != syn.request(0)["key"]
    with pytest.raises(ValueError, match="format"):
        SegQueries("coco")


def _config(tmp_path, weights: dict | None = None, **run) -> dict:
    weights = weights or {}
    model = {
        "name": "llavaseg",
        "path": weights.get("path", ""),
        "options": {**SMALL, "sam_checkpoint": weights.get("sam_checkpoint", "")},
    }
    return {
        "model": model,
        "data": {"name": "seg-queries", "options": {"length": 6, "cot_cache": str(tmp_path / "cot")}},
        "optim": {"lr": 1e-3, "warmup_steps": 0},
        "run": {
            "output_dir": str(tmp_path / "run"),
            "total_steps": 2,
            "global_batch_size": 2,
            "micro_batch_size": 2,
            "save_every": 2,
            "eval_every": 2,
            "eval_batches": 2,
            "device": "cpu",
            **run,
        },
    }


def test_chain_of_thought_cache_resumes_and_is_checked(tmp_path):
    cfg = load_config(base=_config(tmp_path))
    first = cache_chain_of_thought(cfg, splits=["train"], batch_size=4, workers=0)
    assert first["generated"] == 6 and first["already_cached"] == 0
    cached = read_cache(tmp_path / "cot")
    part = tmp_path / "cot" / "part-00000.jsonl"
    lines = part.read_text().splitlines()
    part.write_text("\n".join(lines[:2]) + "\n" + lines[2][:25])  # killed while writing the third record
    with pytest.warns(UserWarning, match="incomplete"):
        assert len(read_cache(tmp_path / "cot")) == 2
    second = cache_chain_of_thought(cfg, splits=["train", "eval"], batch_size=4, workers=0)
    assert second["generated"] == 4 + 6 and second["already_cached"] == 2
    resumed = read_cache(tmp_path / "cot")  # no warning: the torn line was cut off
    assert len(resumed) == 12 and all(resumed[k] == v for k, v in cached.items())  # greedy: the same answers
    assert len(part.read_text().splitlines()) == 12
    assert cache_chain_of_thought(cfg, batch_size=4, workers=0)["generated"] == 0

    ds = SegQueries(length=6, cot_cache=str(tmp_path / "cot"))
    assert ds[3]["cot"] == resumed[ds.request(3)["key"]]
    model = _model()
    batch = batch_of(ds, 2)
    model.chain.answer = None  # with a cache the MLLM does not generate
    assert set(model(batch)) == {"bce", "dice"}
    other = _model(templates={"target": "Name it."})
    with pytest.raises(ValueError, match="another MLLM or other templates"):
        other(batch_of(ds, 2))
    with pytest.raises(ValueError, match="no chain-of-thought answer"):
        SegQueries(length=7, cot_cache=str(tmp_path / "cot"))[0]
    with pytest.raises(ValueError, match="set cot_cache"):
        cache_chain_of_thought(load_config(base={**_config(tmp_path), "data": {"name": "seg-queries"}}), workers=0)
    writer = CacheWriter(tmp_path / "cot2", rank=3)
    writer.append([{"key": "k", "x": 1}])
    assert writer.path.name == "part-00003.jsonl" and read_cache(tmp_path / "cot2") == {"k": {"key": "k", "x": 1}}


def test_cache_fills_every_dataset_of_a_mixture(tmp_path):
    config = _config(tmp_path)
    parts = [{"name": "seg-queries", "options": {"length": n, "cot_cache": str(tmp_path / f"cot{n}")}} for n in (2, 3)]
    config["data"] = {"name": "mixture", "options": {"datasets": parts, "rates": [1, 1], "length": 4}}
    result = cache_chain_of_thought(load_config(base=config), splits=["train"], batch_size=2, workers=0)
    assert result["generated"] == 5
    assert [len(read_cache(tmp_path / f"cot{n}")) for n in (2, 3)] == [2, 3]


def test_llavaseg_trains_through_segfast_train_from_saved_weights(tmp_path):
    from safetensors.torch import load_file

    import segfast
    from segfast.train.evaluation import evaluate_checkpoint

    weights = saved_weights(tmp_path / "weights")
    config = _config(tmp_path, weights, gradient_checkpointing=True)
    cache_chain_of_thought(load_config(base=config), batch_size=3, workers=0)
    result = segfast.train(config)
    assert result["step"] == 2 and all(np.isfinite(result["losses"]))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/iou/gIoU" in r for r in records)
    step = tmp_path / "run" / "checkpoints" / "step-000002"
    saved = load_file(str(step / "trainable.safetensors"))
    assert saved and not any(k.startswith("chain.") for k in saved) and not (step / "adapter").exists()
    assert any(k.startswith("adapters.") for k in saved)
    metrics = evaluate_checkpoint(step, batches=1)
    assert "eval/iou/cIoU" in metrics and np.isfinite(metrics["eval/bce"])
    # the MLLM in the trained model is the saved one, bit for bit
    from transformers import LlavaForConditionalGeneration

    from segfast.train.checkpoint import load_trained

    trained = load_trained(step).chain.lm.state_dict()
    original = LlavaForConditionalGeneration.from_pretrained(weights["path"]).state_dict()
    assert trained.keys() == original.keys() and all(torch.equal(trained[k], original[k]) for k in original)


def test_trains_without_a_cache_generating_on_the_fly(tmp_path):
    import segfast

    config = _config(tmp_path)
    config["data"]["options"].pop("cot_cache")
    result = segfast.train(config)
    assert result["step"] == 2 and all(np.isfinite(result["losses"]))


def test_shipped_config_loads():
    from segfast.config import build_options
    from segfast.models.llavaseg.options import LLaVASegOptions

    cfg = load_config(
        "configs/llavaseg.yaml",
        ["data.options.datasets.1.options.root=/data/rs", "model.options.sam_checkpoint=/w/sam.pth"],
    )
    build_options(LLaVASegOptions, cfg.model.options)  # every key is known
    assert cfg.data.options["datasets"][1]["options"]["root"] == "/data/rs"
    assert not cfg.model.lora.enabled and (cfg.optim.lr, cfg.optim.weight_decay) == (1e-4, 1e-4)
    assert all(d["name"] == "seg-queries" and d["options"]["cot_cache"] for d in cfg.data.options["datasets"])


# ---- the paper's data, evaluation and ablation switches ---------------------------------------------------
def _coco_refer(root, image_ids_by_split: dict):
    """refcoco, refcoco+ and refcocog refs over COCO images named COCO_train2014_<id>.jpg."""
    import pickle

    for name, split_by in (("refcoco", "unc"), ("refcoco+", "unc"), ("refcocog", "umd")):
        (root / name).mkdir(parents=True, exist_ok=True)
        refs = [
            {"split": split, "ann_id": i, "image_id": i, "sentences": [{"sent": f"thing {i}"}]}
            for split, ids in image_ids_by_split.items()
            for i in ids
        ]
        with open(root / name / f"refs({split_by}).p", "wb") as f:
            pickle.dump(refs, f)
        anns = [
            {"id": i, "segmentation": [[0, 0, 20, 0, 20, 20, 0, 20]]}
            for ids in image_ids_by_split.values()
            for i in ids
        ]
        images = [
            {"id": i, "file_name": f"COCO_train2014_{i:012d}.jpg"} for ids in image_ids_by_split.values() for i in ids
        ]
        (root / name / "instances.json").write_text(json.dumps({"images": images, "annotations": anns}))
    (root / "images" / "train2014").mkdir(parents=True, exist_ok=True)
    for ids in image_ids_by_split.values():
        for i in ids:
            Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(
                root / "images" / "train2014" / f"COCO_train2014_{i:012d}.jpg"
            )


def test_semantic_part_and_refclef_queries_without_the_refcoco_val_images(tmp_path):
    refer = tmp_path / "refer"
    _coco_refer(refer, {"train": [1, 2], "val": [3]})
    kept = SegQueries("refcoco", str(refer), exclude_eval_images=str(refer))
    assert [kept.request(i)["query"] for i in range(len(kept))] == ["thing 1", "thing 2"]
    # COCO-Stuff over the same COCO ids: image 3 (a refCOCO val image) is dropped from training
    stuff = tmp_path / "stuff"
    (stuff / "images" / "train2017").mkdir(parents=True)
    (stuff / "stuffthingmaps_trainval2017" / "train2017").mkdir(parents=True)
    (stuff / "labels.txt").write_text("1: person\n2: bicycle\n")
    for i in (1, 3):
        Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(stuff / "images" / "train2017" / f"{i:012d}.jpg")
        label = np.full((30, 40), 255, np.uint8)
        label[:10, :10], label[20:, 20:] = 0, 1
        Image.fromarray(label).save(stuff / "stuffthingmaps_trainval2017" / "train2017" / f"{i:012d}.png")
    semantic = SegQueries("cocostuff", str(stuff), exclude_eval_images=str(refer))
    assert len(semantic) == 1 and semantic._path(semantic.items[0]).name == "000000000001.jpg"
    assert len(SegQueries("cocostuff", str(stuff))) == 2
    queries = set()
    for epoch in range(8):  # the class asked is drawn anew every epoch
        semantic.set_epoch(epoch)
        s = semantic[0]
        queries.add(s["query"])
        assert s["kind"] == "short" and s["masks"][0].sum() > 0
    assert queries == {"person", "bicycle"}
    assert {r["query"] for r in semantic.requests()} == {"person", "bicycle"}  # the cache covers every class
    # parts: "object:part" categories, every such part of the image unioned
    (tmp_path / "parts" / "img").mkdir(parents=True)
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / "parts" / "img" / "p.jpg")
    (tmp_path / "parts" / "train.json").write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "p.jpg", "height": 30, "width": 40}],
                "categories": [{"id": 1, "name": "dog:ear"}, {"id": 2, "name": "dog"}],
                "annotations": [
                    {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[0, 0, 5, 0, 5, 5, 0, 5]]},
                    {"id": 2, "image_id": 1, "category_id": 1, "segmentation": [[30, 0, 35, 0, 35, 5, 30, 5]]},
                    {"id": 3, "image_id": 1, "category_id": 2, "segmentation": [[0, 0, 40, 0, 40, 30, 0, 30]]},
                ],
            }
        )
    )
    parts = SegQueries("pascal_part", str(tmp_path / "parts"), annotations="train.json", images="img")
    assert len(parts) == 1 and parts.request(0)["query"] == "the ear of the dog"
    mask = parts[0]["masks"][0]
    assert mask[:5, :5].all() and mask[:5, 49:54].all() and not mask[20:].any()
    # refCLEF: the refer layout with its own image folder
    clef = tmp_path / "clef"
    write_refer(
        clef,
        np.zeros((30, 40, 3), np.uint8),
        [{"split": "train", "ann_id": 7, "image_id": 1, "sentences": [{"sent": "sky"}]}],
        [{"id": 7, "segmentation": [[0, 0, 30, 0, 30, 20, 0, 20]]}],
    )
    (clef / "refclef").mkdir()
    for f in (clef / "refcoco").iterdir():
        f.rename(clef / "refclef" / f.name)
    (clef / "images" / "saiapr_tc-12").mkdir()
    (clef / "images" / "train2014" / "c.jpg").rename(clef / "images" / "saiapr_tc-12" / "c.jpg")
    assert SegQueries("refcoco", str(clef), dataset="refclef")[0]["query"] == "sky"


def test_dialogue_scores_and_evaluation_switches(tmp_path):
    from segfast.models.llavaseg.dialogue import DialogueMeter

    pytest.importorskip("pycocoevalcap")
    meter = DialogueMeter()
    meter.update(["The piano bench, in front of the piano.", "bark"], [["the piano bench in front of the piano"], []])
    meter.update(["insects are on the bark of the tree"], [["the bark of the tree", "tree bark"]])
    result = meter.compute()
    assert result["samples"] == 2 and result["ROUGE-L"] > 0.5 and result["CIDEr"] > 0
    from pycocoevalcap.rouge.rouge import Rouge

    expected, _ = Rouge().compute_score(
        {0: ["the piano bench in front of the piano"], 1: ["the bark of the tree", "tree bark"]},
        {0: ["the piano bench in front of the piano"], 1: ["insects are on the bark of the tree"]},
    )
    assert result["ROUGE-L"] == pytest.approx(expected)
    meter.state = torch.tensor([1])  # the engine undoing a padding batch
    assert meter.compute()["samples"] == 1
    # the evaluate hook scores the reason step's answer against the sample's explanations
    (tmp_path / "rs" / "val").mkdir(parents=True)
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / "rs" / "val" / "a.jpg")
    (tmp_path / "rs" / "val" / "a.json").write_text(
        json.dumps(
            {
                "text": ["what holds the drink?"],
                "is_sentence": True,
                "shapes": [{"label": "target", "points": [[0, 0], [20, 0], [20, 20], [0, 20]]}],
            }
        )
    )
    (tmp_path / "explain.json").write_text(
        json.dumps([{"image": "a.jpg", "query": "x", "outputs": "the cup holds it"}])
    )
    ds = SegQueries("reasonseg", str(tmp_path / "rs"), split="eval", explanations=str(tmp_path / "explain.json"))
    batch = batch_of(ds, 1)
    assert batch["explanations"] == [["the cup holds it"]]
    model = _model().eval()
    _scripted(model.chain, {"what holds": "the cup holds the drink", "": "(1) The cup. (2) white."})
    meters = {"iou": __import__("segfast.metrics", fromlist=["IoUMeter"]).IoUMeter()}
    model.evaluate(batch, meters)
    assert meters["dialogue"].candidates == ["the cup holds the drink"] and meters["iou"].compute()["samples"] == 1
    # Table 3b: a single scale (the last global block) instead of every stage end
    assert _model(adapter_layers="last").adapters.layers == global_layers(_model().decoder.sam.image_encoder)[-1:]


def test_config_and_lisa_prompting_from_the_cache(tmp_path):
    cfg = load_config(base={"model": {"name": "llavaseg"}})
    assert (cfg.run.global_batch_size, cfg.run.total_steps, cfg.optim.lr, cfg.optim.weight_decay) == (
        160,
        12000,
        1e-4,
        1e-4,
    )
    shipped = load_config("configs/llavaseg.yaml")
    formats = [(d["options"]["format"], d["options"].get("dataset")) for d in shipped.data.options["datasets"]]
    assert formats == [
        ("ade20k", None),
        ("cocostuff", None),
        ("paco", None),
        ("pascal_part", None),
        ("refcoco", "refclef"),
        ("refcoco", "refcoco"),
        ("refcoco", "refcoco+"),
        ("refcoco", "refcocog"),
        ("reasonseg", None),
    ]
    coco = [d["options"] for d in shipped.data.options["datasets"] if d["options"]["format"] in ("cocostuff", "paco")]
    assert all("exclude_eval_images" in o for o in coco)
    config = _config(tmp_path)
    cache_chain_of_thought(load_config(base=config), splits=["train"], batch_size=4, workers=0)
    ds = SegQueries(length=6, cot_cache=str(tmp_path / "cot"), lisa_prompt=True)
    s = ds[1]
    assert s["conversation"] == [
        {"question": f"<image>\n {s['cot']['reason']} Please output segmentation mask.", "answer": "[SEG]."}
    ]
    from tests.models.seg_family import build

    lisa = build("lisa", loss_resolution="frame")  # Table 3c: a LISA model segments from the cached reason step
    assert set(lisa(batch_of(ds, 2))) == {"text", "bce", "dice"}
    with pytest.raises(ValueError, match="loss_resolution=frame"):  # SegQueries holds frame masks only
        build("lisa")(batch_of(ds, 2))
    with pytest.raises(ValueError, match="cot_cache"):
        SegQueries(length=6, lisa_prompt=True)
