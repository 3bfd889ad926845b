import pytest
import torch

from segfast.config import ModelConfig
from segfast.data import collate
from segfast.data.llafs_pseudo import PseudoPairs
from segfast.models.llafs.answer import format_answer, format_points
from segfast.models.llafs.model import LLaFS

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # SDPA fallback of masked attention on CPU


TINY = {
    "num_query_tokens": 4,
    "image_size": 32,
    "coordinate_bins": 32,
    "encoder": "tiny",
    "qformer": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128},
    "refine_dim": 32,
    "refine_queries": 4,
    "ohem_min_kept": 256,
}


def tiny(path="", lora=True, **options):
    torch.manual_seed(0)
    cfg = ModelConfig(name="llafs", path=path, options={**TINY, **options})
    cfg.lora.enabled = lora
    return LLaFS(cfg)


def pseudo_batch(n=2, size=32, progress=0.2):
    data = PseudoPairs(size=size, curriculum_samples=1000)  # stream position n has progress n / 1000
    return collate([data.sample(round(progress * 1000) + i) for i in range(n)])


def test_training_step_trains_the_paper_set():
    """§4.1 stages 2-3: the fully-connected layer, the LLM (LoRA) and the refinement train; the
    encoder and the stage-1 Q-Former (queries, text embeddings) stay frozen."""
    model = tiny()
    losses = model(pseudo_batch())
    assert set(losses) == {"loss_llm", "loss_ref"} and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    lora = [g for n, g in grads.items() if "lora_" in n]
    refine = [g for n, g in grads.items() if n.startswith("refine.")]
    assert lora and all(g is not None for g in lora) and any(g.abs().sum() > 0 for g in lora)
    assert refine and any(g is not None and g.abs().sum() > 0 for g in refine)
    assert grads["visual.project.weight"].abs().sum() > 0
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert all(not p.requires_grad for p in model.encoder.parameters())
    assert "visual.query_tokens" in frozen and any(n.startswith("visual.qformer.") for n in frozen)
    assert any(n.startswith("visual.text.") for n in frozen)
    assert not hasattr(model, "prior_embed") and not hasattr(model, "support_mask_embed")  # ours, off
    assert model.count_tokens(None) > 0
    stage1 = tiny(stage="qformer", lora=False)  # §4.1 stage 1: Q-Former and fully-connected layer, LLM frozen
    trainable = {".".join(n.split(".")[:2]) for n, p in stage1.named_parameters() if p.requires_grad}
    assert trainable == {"visual.qformer", "visual.text", "visual.query_tokens", "visual.project"}


def test_pretraining_target_is_the_hidden_vertices():
    """Supp A.2.4: M vertices are given in the instruction, the answer is the other 16 - M."""
    model = tiny()
    batch = pseudo_batch(1, progress=0.2)  # M = 15 - floor(0.2 * 30) = 9
    hints = batch["hints"][0]
    assert int(hints.sum()) == 9
    text = model.instruction(batch, 0)
    assert text.count("[mask]") == 7 and text.endswith("What is the remaining points?")
    answer = model.answer(batch, 0, batch["query_polygons"][0])
    _, labels = model._embed(text, [torch.zeros(4, 128)] * 2, answer)
    assert int(torch.isin(labels, model.coord_ids).sum()) == 2 * 7
    given = model.instruction(batch, 0).split("the output should be ")[1]
    full = format_points(batch["query_polygons"][0][0], 32, 32, 32)
    assert all(p in full for p in given.split(" What")[0].strip(".()").split("),(") if "[mask]" not in p)
    # predictions under teacher forcing keep the given vertices and fill the hidden ones
    out = model._predicted_polygons(torch.zeros(1, len(labels) - 1, len(model.tokenizer)), labels[None, 1:], batch)
    assert out[0].shape == (1, 16, 2) and torch.equal(out[0][0][hints], batch["query_polygons"][0][0][hints])


def test_instructions_follow_the_paper():
    model = tiny()
    batch = pseudo_batch(2)
    del batch["hints"]
    batch["class_names"] = ["dog", "cat"]
    task = model.instruction(batch, 0)
    assert task.startswith("For each object within the class dog in an image, output coordinates of a 16-point")
    assert "clockwise" in task and "(c1, c2, ..., cn)" in task and "within (0, 32)" in task
    assert task.count("<image>") == 2 and task.endswith("For image <image>, what is the output?")
    assert "the output should be (((" in task  # the answer tuple around the support's one polygon
    batch["attributes"] = [["four legs", "a tail"], []]
    batch["support_tables"] = [[[{"polygon": batch["query_polygons"][0][0], "attributes": ["a tail"]}]], [[]]]
    fine = model.instruction(batch, 0)
    assert "you can refer to the following properties of dog: dog has four legs, a tail." in fine
    assert ", because in these regions, ((" in fine and ") is a tail." in fine
    assert "Perform image segmentation." in tiny(instruction="abstract").instruction(batch, 0)
    plain = tiny(refinement=False, max_objects=1)  # Table 4: without the refinement network
    assert set(plain(batch)) == {"loss_llm"}
    out = plain.predict(batch)
    assert torch.equal(out["masks"], out["polygon_masks"])
    no_support = tiny(with_support=False)
    assert no_support.instruction(batch, 0).count("<image>") == 1
    assert no_support(batch)["loss_llm"].isfinite()  # one visual token block per sample
    two = pseudo_batch(1)
    del two["hints"]
    two["support_polygons"] = [two["support_polygons"][0] * 2]
    two["support_images"] = two["support_images"].expand(-1, 2, -1, -1, -1)
    assert model.instruction(two, 0).count("for image <image>, the output should be") == 2  # K-shot, Supp A.6
    embeds, labels = model._embed(task, [torch.zeros(4, 128)] * 2, "()")
    assert embeds.shape[0] == labels.shape[0] and (labels != -100).sum() == 3  # "(", ")" and EOS
    with pytest.raises(ValueError, match="<image>"):
        model._embed(task, [torch.zeros(4, 128)], None)


def test_the_qformer_reads_a_photo_of_the_class():
    """Supp B: the Q-Former's text input is "a photo of [class]." and it shapes the query tokens."""
    model = tiny().eval()
    read = []
    tokenizer = model.visual.tokenizer
    model.visual.tokenizer = lambda texts, **kw: read.append(list(texts)) or tokenizer(texts, **kw)
    feats = torch.randn(2, model.encoder.out_channels, 4, 4)
    with torch.no_grad():
        dog = model.visual(feats, ["dog", "dog"])
        cat = model.visual(feats, ["dog", "cat"])
    assert read == [["a photo of dog.", "a photo of dog."], ["a photo of dog.", "a photo of cat."]]
    torch.testing.assert_close(dog[0], cat[0])
    assert not torch.allclose(dog[1], cat[1])  # the class changes what the queries read


def test_multi_object_answers_follow_the_hungarian_matching(monkeypatch):
    """L_llm's answer lists the objects in the order matched to the teacher-forced predictions."""
    model = tiny()
    batch = pseudo_batch(1)
    del batch["hints"]
    poly = batch["query_polygons"][0]
    two = torch.cat([poly, poly + 5.0])
    batch["query_polygons"] = [two]
    seen = []
    real = model._teacher_forced

    def spy(b, visual, answers):
        seen.append(answers)
        loss, preds = real(b, visual, answers)
        return loss, [two.flip(0)] if len(seen) == 1 else preds  # the model "predicts" them swapped

    monkeypatch.setattr(model, "_teacher_forced", spy)
    model(batch)
    assert seen[0][0] == format_answer(two, 32, 32, 32)
    assert seen[1][0] == format_answer(two.flip(0), 32, 32, 32)


def test_ignored_pixels_do_not_train_the_refinement():
    model = tiny()
    model.eval()  # no dropout: two forward passes see the same network
    batch = pseudo_batch(1)
    batch["query_ignore"] = torch.zeros_like(batch["query_mask"])
    batch["query_ignore"][:, :, :10] = True
    first = model(batch)["loss_ref"]
    batch["query_mask"][:, :, :10] = ~batch["query_mask"][:, :, :10]  # flipped truth where ignored
    assert torch.equal(model(batch)["loss_ref"], first)
    target = model.refine_target(batch)
    assert (target[:, :, :10] == 255).all() and set(target[:, :, 10:].unique().tolist()) <= {0, 1}


def test_predict_generates_parses_rasterizes_refines():
    model = tiny(max_objects=1)
    out = model.predict(pseudo_batch(2))
    assert out["logits"].shape == (2, 32, 32) and torch.equal(out["masks"], out["logits"] > 0)
    assert len(out["texts"]) == 2 and len(out["errors"]) == 2
    assert out["masks"].shape == (2, 32, 32) and out["masks"].dtype == torch.bool
    for polys, err, prior in zip(out["polygons"], out["errors"], out["polygon_masks"]):
        assert polys.shape[1:] == (16, 2)
        assert (err is None) or (len(polys) == 0 and not prior.any())  # unparsed answers give no polygon


def test_local_checkpoint_path_and_bad_options(tmp_path):
    from tests.train.conftest import write_tiny_llm

    model = tiny(path=str(write_tiny_llm(tmp_path / "llm")))
    assert model.peft_model is not None and len(model.transformer_blocks()) == 2
    assert len(set(model.coord_ids.tolist())) == 32  # coordinate tokens added as single ids, embeddings resized
    assert model.lm.get_input_embeddings().num_embeddings >= len(model.tokenizer)
    assert torch.isfinite(model(pseudo_batch(1))["loss_llm"])
    with pytest.raises(ValueError, match="unknown config key .model.options.encoder_depth"):
        tiny(encoder_depth=3)
    with pytest.raises(ValueError, match="encoder"):
        tiny(encoder="vit")


def test_evaluate_fold_on_a_generated_pascal_tree(tmp_path, gen):
    from segfast.jobs.fewshot_eval import evaluate_fold
    from tests.data.layouts import pascal_tree

    pascal_tree(tmp_path, gen)
    result = evaluate_fold(tiny(max_objects=1), tmp_path, "pascal", fold=0, shots=1, episodes=3, batch_size=2)
    assert set(result["per_class"]) == {1, 2} and 0.0 <= result["mIoU"] <= 1.0 and 0.0 <= result["parsed"] <= 1.0


def test_shipped_configs_carry_the_papers_settings():
    """§4.1 / Supp B: AdamW 2e-4 cosine, batch 32, 384 input, Q-Former 8 x 384 with 100 queries and its
    text input, CLIP ResNet-50 frozen, refinement 128 wide; N_p = 60K pretraining steps; the three
    stages' trainable sets and hand-over."""
    from pathlib import Path

    from segfast.config import build_options
    from segfast.models.llafs.options import LLaFSOptions
    from segfast.train import load_config

    configs = Path(__file__).parents[2] / "configs"
    stage1, stage2, stage3 = (
        load_config(configs / f"{n}.yaml")
        for n in ("llafs_stage1_qformer", "llafs_stage2_pretrain", "llafs_pascal_fold0")
    )
    for cfg in (stage1, stage2, stage3):
        assert cfg.model.name == "llafs" and cfg.optim.lr == 2e-4 and cfg.optim.schedule == "cosine"
        assert cfg.run.global_batch_size == 32
        o = build_options(LLaFSOptions, cfg.model.options)
        assert (o.image_size, o.coordinate_bins, o.encoder, o.freeze_encoder) == (384, 384, "clip-rn50", True)
        assert (o.qformer["hidden_size"], o.qformer["num_hidden_layers"], o.num_query_tokens) == (384, 8, 100)
        assert o.qformer_text and (o.refine_dim, o.refine_layers) == (128, 3)
        assert not (o.similarity_prior or o.support_mask_embed or o.memory_position or o.refine_polygon_input)
    assert build_options(LLaFSOptions, stage1.model.options).stage == "qformer" and not stage1.model.lora.enabled
    assert stage1.run.total_steps == 100_000 and stage1.data.name == "llafs-captions"
    assert stage2.run.total_steps == 60_000 and stage2.data.options["curriculum_samples"] == 60_000 * 32
    assert stage2.model.lora.enabled and stage3.model.lora.enabled
    assert stage2.model.options["qformer_path"] == stage3.model.options["qformer_path"]
    assert stage2.model.options["qformer_path"].startswith(stage1.run.output_dir)
    assert stage3.run.init_from == stage2.run.output_dir and stage3.data.options["seeds"] == 5


@pytest.mark.parametrize("kind,channels", [("tiny", 160), ("resnet50", 3584)])
def test_encoder_concatenates_three_stages_at_one_eighth(kind, channels):
    from segfast.models.llafs.encoder import ImageEncoder

    enc = ImageEncoder(kind)
    feats = enc(torch.rand(2, 3, 64, 72))
    assert feats.shape == (2, channels, 8, 9) and enc.out_channels == channels and not feats.requires_grad
    enc.train()
    assert not enc.training  # frozen encoders stay in eval mode
    learn = ImageEncoder("tiny", frozen=False)
    assert learn(torch.rand(1, 3, 32, 32)).requires_grad


def test_engine_evaluation_reports_the_fold_miou_of_evaluate_fold(tmp_path, gen):
    """The engine's evaluation (any number of processes, segfast evaluate --benchmark) reports the
    papers' per-class mean foreground IoU, the same as segfast llafs-eval."""
    from segfast.config import load_config
    from segfast.data.fewshot import FewShotEpisodes
    from segfast.jobs.fewshot_eval import evaluate_fold
    from segfast.train.distributed import DistEnv
    from segfast.train.evaluation import evaluate
    from tests.data.layouts import pascal_tree

    pascal_tree(tmp_path, gen)
    model = tiny(max_objects=1)
    reference = evaluate_fold(model, tmp_path, "pascal", fold=0, shots=1, episodes=3, batch_size=2)
    episodes = FewShotEpisodes(tmp_path, "pascal", 0, 1, "val", model.image_size, 3, 0)
    cfg = load_config(overrides=["run.micro_batch_size=2", "run.global_batch_size=2", "run.device=cpu"])
    result = evaluate(model, model, episodes, cfg, DistEnv(), "fp32", batches=0)
    assert result["eval/samples"] == 3 and result["eval/fold/mIoU"] == pytest.approx(reference["mIoU"])


def test_a_public_blip2_qformer_loads(tmp_path):
    """A BLIP-2 checkpoint in transformers' format (here a tiny Blip2ForImageTextRetrieval, whose
    Q-Former has the text embeddings): its layers, text embeddings and 32 query tokens load, and
    a linear layer projects the encoder's channels to the Q-Former's (EVA ViT-g's 1408 in BLIP-2)."""
    from transformers import Blip2Config, Blip2ForImageTextRetrieval

    from segfast.models.llafs.prompts import template_words
    from segfast.models.tiny import word_tokenizer

    tok = word_tokenizer(sorted(set(template_words()) | {"a", "photo", "of", ".", "[CLS]"}))  # BLIP-2 has its own
    tok.save_pretrained(str(tmp_path / "bert"))
    qformer = {
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 128,
        "encoder_hidden_size": 48,
        "vocab_size": len(tok),
        "use_qformer_text_input": True,
    }
    vision = {
        "hidden_size": 48,
        "intermediate_size": 96,
        "num_hidden_layers": 1,
        "num_attention_heads": 4,
        "image_size": 32,
        "patch_size": 8,
    }
    torch.manual_seed(1)
    blip = Blip2ForImageTextRetrieval(Blip2Config(vision_config=vision, qformer_config=qformer, num_query_tokens=3))
    blip.save_pretrained(str(tmp_path / "blip2"))
    model = tiny(qformer_path=str(tmp_path / "blip2"), qformer_tokenizer=str(tmp_path / "bert"), num_query_tokens=5)
    own, theirs = model.visual.state_dict(), blip.state_dict()
    assert isinstance(model.visual.memory_proj, torch.nn.Linear) and model.visual.memory_proj.in_features == 160
    layer = "qformer.encoder.layer.0.crossattention.attention.key.weight"
    assert torch.equal(own[layer], theirs[layer]) and own[layer].shape[1] == 48
    assert torch.equal(own["text.word_embeddings.weight"], theirs["embeddings.word_embeddings.weight"])
    assert torch.equal(own["query_tokens"][:, :3], theirs["query_tokens"])
    assert torch.isfinite(model(pseudo_batch(1))["loss_llm"])
    with pytest.raises(ValueError, match="qformer_tokenizer"):
        tiny(qformer_path=str(tmp_path / "blip2"))  # its text embeddings need BLIP-2's tokenizer
