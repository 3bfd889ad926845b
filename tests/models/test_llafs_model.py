import pytest
import torch

from segfast.config import ModelConfig
from segfast.data import collate
from segfast.data.llafs_pseudo import PseudoPairs
from segfast.models.llafs.model import LLaFS

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # SDPA fallback of masked attention on CPU


def tiny(path="", **options):
    torch.manual_seed(0)
    return LLaFS(ModelConfig(name="llafs", path=path, options={"num_query_tokens": 4, "image_size": 32, **options}))


def pseudo_batch(n=2, size=32, progress=0.2):
    data = PseudoPairs(size=size, curriculum_samples=max(1, int(10 / max(progress, 1e-3))))
    return collate([data.sample(i) for i in range(n)])


def test_training_step_reaches_lora_and_refinement():
    model = tiny()
    losses = model(pseudo_batch())
    assert set(losses) == {"loss_llm", "loss_ref"} and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    lora = [g for n, g in grads.items() if "lora_" in n]
    refine = [g for n, g in grads.items() if n.startswith("refine.")]
    assert lora and all(g is not None for g in lora) and any(g.abs().sum() > 0 for g in lora)
    assert refine and any(g is not None and g.abs().sum() > 0 for g in refine)
    assert grads["query_tokens"].abs().sum() > 0 and grads["project.weight"].abs().sum() > 0
    assert all(not p.requires_grad for p in model.encoder.parameters())  # frozen, as in the paper
    assert model.count_tokens(None) > 0


def test_multi_object_answers_are_matched_to_predictions():
    model = tiny()
    batch = pseudo_batch(1)
    poly = batch["query_polygons"][0]
    batch["query_polygons"] = [torch.cat([poly, poly.flip(1)])]  # two objects
    losses = model(batch)
    assert torch.isfinite(losses["loss_llm"])


def test_instructions_and_answer_layout():
    model = tiny()
    batch = pseudo_batch(1)
    text = model.instruction(batch, 0)
    assert text.count("<image>") == 2 and "[mask]" in text  # 9 of 16 vertices given at progress 0.2
    del batch["hints"]
    task = model.instruction(batch, 0)
    assert "[mask]" not in task and task.count("<image>") == 2
    embeds, labels = model._embed(task, [torch.zeros(4, 128)] * 2, "()")
    assert embeds.shape[0] == labels.shape[0] and (labels != -100).sum() == 3  # "(", ")" and EOS
    with pytest.raises(ValueError, match="<image>"):
        model._embed(task, [torch.zeros(4, 128)], None)


def test_predict_generates_parses_rasterizes_refines():
    model = tiny(max_objects=1)
    out = model.predict(pseudo_batch(2))
    assert len(out["texts"]) == 2 and len(out["errors"]) == 2
    assert out["masks"].shape == (2, 32, 32) and out["masks"].dtype == torch.bool
    for polys, err, prior in zip(out["polygons"], out["errors"], out["polygon_masks"]):
        assert polys.shape[1:] == (16, 2)
        assert (err is None) or (len(polys) == 0 and not prior.any())  # unparsed answers give no polygon


def test_local_checkpoint_path_and_bad_options(tmp_path):
    from tests.train.conftest import write_tiny_llm

    model = tiny(path=str(write_tiny_llm(tmp_path / "llm")))
    assert model.peft_model is not None and len(model.transformer_blocks()) == 2
    assert len(model.tokenizer) > 384  # coordinate tokens added, embeddings resized
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


def test_shipped_llafs_config_loads():
    from pathlib import Path

    from segfast.data import DATASETS
    from segfast.models import MODELS
    from segfast.train import load_config

    cfg = load_config(Path(__file__).parents[2] / "configs" / "llafs_pascal_fold0.yaml")
    assert cfg.model.name in MODELS and cfg.data.name in DATASETS
    assert cfg.model.options["encoder"] == "resnet50" and cfg.model.options["num_query_tokens"] == 100


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
