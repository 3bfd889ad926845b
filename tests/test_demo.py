import json

import pytest

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # SDPA fallback of masked attention on CPU


@pytest.mark.slow
@pytest.mark.xfail(
    run=False,
    reason="issue 20's target, not reached yet: the default demo measures LLM polygon IoU ~0.05-0.13, and a "
    "random-init Q-Former does not learn to write positions in the budget (README, LLaFS section); not run, "
    "it would spend minutes to fail",
)
def test_demo_localises_the_objects(tmp_path, monkeypatch):
    """The main job as users run it (the default steps): the tiny LLaFS, pretrained with the
    paper's curriculum and the similarity prior off, writes polygons on the objects of held-out
    pairs (the LLM's own polygon IoU, not only the refined mask's), and leaves both pictures."""
    from segfast.demo import DEMO_STEPS, run

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # run as users do: no interpreted kernels on CPU
    result = run(tmp_path, "cpu")
    before, after = result["before"], result["after"]
    assert after["parsed"] >= 0.9, after
    assert after["polygon_iou"] >= 0.5 and before["polygon_iou"] < 0.1, (before, after)
    assert after["iou"] >= 0.5, (before, after)
    assert result["grid"].stat().st_size > 10_000 and result["curves"].stat().st_size > 10_000
    assert (tmp_path / "llafs-run" / "checkpoints" / f"step-{DEMO_STEPS:06d}" / "trainable.safetensors").exists()


@pytest.mark.slow
def test_demo_repeats_its_numbers(tmp_path, monkeypatch):
    """Seeded and single-threaded: two runs on one machine give the same losses and the same IoU."""
    from segfast.demo import run

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    runs = [run(tmp_path / name, "cpu", steps=6, eval_samples=4) for name in ("a", "b")]
    assert runs[0]["after"] == runs[1]["after"]
    losses = [
        [
            json.loads(line).get("loss")
            for line in (tmp_path / name / "llafs-run" / "metrics.jsonl").read_text().splitlines()
        ]
        for name in ("a", "b")
    ]
    assert losses[0] == losses[1] and len([x for x in losses[0] if x is not None]) == 6
