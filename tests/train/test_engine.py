import json

import pytest
import torch

import segfast
from segfast.models import MODELS
from segfast.models.llm import add_special_tokens, choose_attention, verify_single_ids
from segfast.train import ConfigError, load_config
from segfast.train.engine import NonFiniteLoss
from tests.train.runs import base_config, epochs_config, losses_by_step, torchrun


def test_loaded_llm_with_lora_learns_and_exports(tiny_llm_dir, tmp_path):
    cfg = base_config(tmp_path / "run", total_steps=12)
    cfg["model"].update(path=str(tiny_llm_dir), special_tokens=["[SEG]"])
    cfg["data"]["options"]["vocab_size"] = 60
    result = segfast.train(cfg)
    losses = result["losses"]
    assert len(losses) == 12 and sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.05
    ckpt = tmp_path / "run" / "checkpoints" / "step-000012"
    # the adapter is in peft's own format
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llm_dir))
    base = AutoModelForCausalLM.from_pretrained(str(tiny_llm_dir))
    base.resize_token_embeddings(len(tokenizer) + 1)
    peft_model = PeftModel.from_pretrained(base, str(ckpt / "adapter"))
    assert any("lora_A" in n for n, _ in peft_model.named_parameters())
    # export merges LoRA into a plain transformers directory that loads and runs
    from segfast.train.export import export

    out = export(ckpt, tmp_path / "exported")
    merged = AutoModelForCausalLM.from_pretrained(str(out))
    assert not any("lora" in n for n, _ in merged.named_parameters())
    exported_tok = AutoTokenizer.from_pretrained(str(out))
    assert len(exported_tok("[SEG]", add_special_tokens=False)["input_ids"]) == 1
    ids = torch.tensor([[5, 6, 7, 8]])
    assert torch.isfinite(merged(ids).logits).all()


def test_special_token_check_fires_on_a_splitting_tokenizer(tiny_llm_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llm_dir))
    with pytest.raises(ValueError, match=r"\[SEG\].*not to one id"):
        verify_single_ids(tokenizer, ["[SEG]"])  # splits into "[", "SEG", "]"
    (seg,) = add_special_tokens(tokenizer, ["[SEG]"])
    assert tokenizer("a [SEG] b", add_special_tokens=False)["input_ids"].count(seg) == 1


def test_attention_choice_is_explained():
    impl, why = choose_attention("auto", torch.device("cpu"))
    assert impl == "sdpa" and why
    with pytest.raises(ConfigError, match="flash_attention_2"):
        choose_attention("flash_attention_2", torch.device("cpu"))


def test_kill_and_resume_reproduces_the_uninterrupted_run(tmp_path):
    full = segfast.train(epochs_config(tmp_path / "full", total_steps=10))
    killed = epochs_config(tmp_path / "resumed", total_steps=10, stop_after=6)
    segfast.train(killed)  # "killed" after step 6; the newest checkpoint is step 4
    assert sorted(p.name for p in (tmp_path / "resumed" / "checkpoints").iterdir()) == ["step-000004"]
    segfast.train(epochs_config(tmp_path / "resumed", total_steps=10, resume=True))
    resumed = losses_by_step(tmp_path / "resumed")
    assert [resumed[s] for s in range(1, 11)] == full["losses"]  # bit for bit


def test_checkpoints_are_atomic_and_pruned(tmp_path):
    segfast.train(base_config(tmp_path / "run", total_steps=12, save_every=2, keep_last=2))
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["step-000010", "step-000012"]  # no temporary directories left behind


def test_nan_loss_stops_with_a_checkpoint(tmp_path):
    class Exploding(torch.nn.Module):
        def __init__(self, cfg, device=None):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(()))
            self.calls = 0

        def forward(self, batch):
            self.calls += 1
            loss = self.w * batch["input_ids"].float().mean()
            return {"loss": loss * (float("nan") if self.calls > 12 else 1.0)}  # 4 micro-batches a step

    MODELS["exploding"] = Exploding
    try:
        cfg = base_config(tmp_path / "run", total_steps=10)
        cfg["model"] = {"name": "exploding"}
        with pytest.raises(NonFiniteLoss, match="step 4"):
            segfast.train(cfg)
    finally:
        del MODELS["exploding"]
    assert (tmp_path / "run" / "checkpoints" / "step-000003-nonfinite" / "state.pt").exists()


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"run\.totl_steps.*did you mean run\.total_steps"):
        load_config(base={"run": {"totl_steps": 3}})
    with pytest.raises(ConfigError, match=r"run\.total_steps: expected int"):
        load_config(overrides=["run.total_steps=many"])
    with pytest.raises(ConfigError, match="multiple of"):
        segfast.train(base_config(tmp_path, global_batch_size=7))
    path = tmp_path / "c.yaml"
    path.write_text("run:\n  total_steps: 3\n")
    assert load_config(path, ["optim.lr=0.5"]).optim.lr == 0.5


def test_ddp_two_processes_match_one_process_on_variable_lengths(tmp_path):
    """The token mean is taken over the whole global batch (num_items_in_batch), not per
    micro-batch: with dropout off, 1 and 2 processes agree to float rounding on variable-length
    samples (they differed by 1.3e-3 at step 1), across epochs."""
    single = segfast.train(epochs_config(tmp_path / "one", total_steps=6))
    torchrun(epochs_config(tmp_path / "two", total_steps=6), tmp_path / "two.yaml")
    two = losses_by_step(tmp_path / "two")
    assert len(two) == 6
    for step, loss in enumerate(single["losses"], 1):
        assert two[step] == pytest.approx(loss, rel=2e-6), step


def test_fsdp2_two_processes_run_and_resume(tmp_path):
    cfg = base_config(tmp_path / "fsdp", total_steps=6, strategy="fsdp", save_every=3)
    torchrun(cfg, tmp_path / "fsdp.yaml")
    losses = losses_by_step(tmp_path / "fsdp")
    assert len(losses) == 6 and all(v == v for v in losses.values())
    assert (tmp_path / "fsdp" / "checkpoints" / "step-000006" / "adapter" / "adapter_model.safetensors").exists()
    single = segfast.train(base_config(tmp_path / "one", total_steps=6))
    for step, loss in enumerate(single["losses"], 1):
        assert losses[step] == pytest.approx(loss, rel=1e-4, abs=1e-5)


def test_mixture_rates_and_collate():
    from segfast.data import MixtureDataset, collate

    a = [{"input_ids": torch.tensor([1, 2, 3]), "mask": torch.zeros(2, 2)}] * 5
    b = [{"input_ids": torch.tensor([4]), "mask": torch.ones(2, 2)}] * 5
    mix = MixtureDataset([a, b], [9, 3], length=4000, seed=1)
    share = sum(mix[i]["source"] == 0 for i in range(4000)) / 4000
    assert abs(share - 0.75) < 0.03
    assert mix[17]["source"] == MixtureDataset([a, b], [9, 3], 4000, seed=1)[17]["source"]
    batch = collate([a[0], b[0]])
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["mask"].shape == (2, 2, 2)


def test_evaluation_checkpointing_and_metrics_hook(tmp_path):
    class Segmenting(torch.nn.Module):
        """A toy model with an evaluate hook that feeds segfast.metrics."""

        def __init__(self, cfg, device=None):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, batch):
            return {"loss": (self.w - 1.0) ** 2 + 0 * batch["input_ids"].float().mean()}

        def evaluate(self, batch, meters):
            pred = torch.zeros(len(batch["input_ids"]), 4, 4, dtype=torch.bool)
            pred[:, :2] = True
            gt = torch.ones_like(pred)
            meters["iou"].update(pred, gt)

    MODELS["segmenting"] = Segmenting
    try:
        cfg = base_config(tmp_path / "run", total_steps=4, eval_every=2, eval_batches=2, gradient_checkpointing=True)
        cfg["model"] = {"name": "segmenting"}
        segfast.train(cfg)
    finally:
        del MODELS["segmenting"]
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "eval/loss" in r]
    assert [r["step"] for r in evals] == [2, 4]
    assert evals[0]["eval/iou/cIoU"] == 0.5 and evals[0]["eval/iou/samples"] == 4


def test_toy_llm_with_gradient_checkpointing_trains(tmp_path):
    result = segfast.train(base_config(tmp_path / "ckpt", total_steps=3, gradient_checkpointing=True))
    assert len(result["losses"]) == 3 and all(loss == loss for loss in result["losses"])
