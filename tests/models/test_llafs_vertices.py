"""LLaFS Fig. 5's ablation: V-point polygons (model.options.num_vertices with the data's
num_vertices) in the instructions, the answers, the parser and the token budget."""

import pytest
import torch

from segfast.data import collate
from segfast.data.llafs_pseudo import PseudoPairs
from segfast.models.llafs.answer import format_answer
from segfast.models.llafs.prompts import pretrain_instruction, task_instruction
from tests.models.test_llafs_model import tiny

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # SDPA fallback of masked attention on CPU


def pairs(n=2, vertices=8, progress=0.2, hints=True):
    data = PseudoPairs(size=32, curriculum_samples=1000, num_vertices=vertices)
    batch = collate([data.sample(round(progress * 1000) + i) for i in range(n)])
    if not hints:
        del batch["hints"]  # the task instruction (stages 2-3's few-shot form)
    return batch


def test_the_instructions_ask_for_v_point_polygons():
    """§3.2.1 / Supp A.2.4 with 8 points; 16 reads as the paper prints it."""
    batch = pairs(hints=False)
    task = tiny(num_vertices=8).instruction(batch, 0)
    assert "output coordinates of a 8-point polygon" in task and "((x1,y1),(x2,y2),..., (x8,y8))." in task
    assert "16" not in task
    pretrain = tiny(num_vertices=8).instruction(pairs(), 0)
    assert "a 8-point polygon" in pretrain and "((x1, y1), (x2, y2), ..., (x8, y8))." in pretrain
    poly = torch.rand(1, 16, 2) * 32
    assert task_instruction([poly], 384, "dog", with_support=False).startswith(
        "For each object within the class dog in an image, output coordinates of a 16-point polygon that encloses "
        "the object. These points should be arranged in a clockwise direction. The output should be a tuple in the "
        "format of (c1, c2, ..., cn), where cn is the coordinates for the n-th object and its format should be "
        "((x1,y1),(x2,y2),..., (x16,y16)). The coordinate value should be within (0, 384). For image"
    )  # §3.2.1 word for word
    hints = torch.zeros(16, dtype=torch.bool)
    paper = pretrain_instruction([poly], poly[0], hints, 32, 32)
    assert "of a 16-point polygon" in paper and "is ((x1, y1), (x2, y2), ..., (x16, y16)). The" in paper


@pytest.mark.parametrize("hints", [True, False])
def test_an_8_vertex_model_trains_on_8_point_polygons(hints):
    """A V = 8 model learns its 8-point answers (the loss falls over a few steps on one batch) and
    reads its teacher-forced predictions as (n, 8, 2) polygons."""
    torch.manual_seed(0)
    model, batch = tiny(num_vertices=8), pairs(hints=hints)
    answers = [model.answer(batch, i, batch["query_polygons"][i]) for i in range(2)]
    assert all(a.count("[c-") == 2 * (8 - int(batch["hints"][i].sum()) if hints else 8) for i, a in enumerate(answers))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(8):
        loss = model(batch)["loss_llm"]
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < 0.7 * losses[0]
    visual, _ = model._visual_lists(batch)
    _, preds = model._teacher_forced(batch, visual, model._answers(batch, batch["query_polygons"]))
    assert [p.shape for p in preds] == [(1, 8, 2)] * 2


def test_an_8_vertex_model_generates_and_parses_8_point_answers(monkeypatch):
    """predict parses 8-point answers (a 16-point parser would drop them) and budgets tokens for 8."""
    model, batch = tiny(num_vertices=8, max_objects=2).eval(), pairs(n=1, hints=False)
    truth = batch["query_polygons"][0]
    tok = model.tokenizer
    ids = tok(format_answer(truth, 32, 32, 32), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    budgets = []

    def generate(**kw):
        budgets.append(kw["max_new_tokens"])
        return torch.tensor([ids])

    monkeypatch.setattr(model.lm, "generate", generate)
    out = model.predict(batch)
    assert out["errors"] == [None] and out["polygons"][0].shape == (1, 8, 2)
    assert torch.allclose(out["polygons"][0], truth, atol=1.0)  # bin centres, 1-pixel bins
    one = len(tok(format_answer(truth[:1], 32, 32, 32)[1:-1], add_special_tokens=False)["input_ids"])
    assert budgets == [(one + 1) * 2 + 2]  # max_objects 8-point objects
    untrained = tiny(num_vertices=8, max_objects=1).predict(batch)
    assert untrained["polygons"][0].shape[1:] == (8, 2)


def test_a_vertex_count_mismatch_is_refused():
    """Polygons of another count than model.options.num_vertices would be written and parsed
    wrongly: forward, predict and the token count refuse them, naming both settings."""
    model = tiny(num_vertices=8)
    match = r"query_polygons have 16 vertices, model.options.num_vertices is 8: .*data.options.num_vertices=8"
    for batch in (pairs(vertices=16), pairs(vertices=16, hints=False)):
        for call in (model, model.predict, model.count_targets):
            with pytest.raises(ValueError, match=match):
                call(batch)
    batch = pairs(hints=False)
    batch["support_tables"] = [[[{"polygon": torch.rand(16, 2) * 32, "attributes": ["a tail"]}]], [[]]]
    with pytest.raises(ValueError, match="support_tables have 16 vertices.*--num-vertices 8"):
        model(batch)
    batch = pairs()
    batch["hints"] = torch.zeros(2, 16, dtype=torch.bool)
    with pytest.raises(ValueError, match="hints have 16 vertices"):
        model(batch)
    with pytest.raises(ValueError, match="model.options.num_vertices must be an integer >= 3"):
        tiny(num_vertices=2)


def test_few_shot_evaluation_reads_the_models_vertex_count(tmp_path, gen):
    from segfast.jobs.fewshot_eval import evaluate_fold
    from tests.data.layouts import pascal_tree

    pascal_tree(tmp_path, gen)
    result = evaluate_fold(tiny(num_vertices=8, max_objects=1), tmp_path, "pascal", 0, 1, episodes=2, batch_size=2)
    assert 0.0 <= result["mIoU"] <= 1.0


def test_the_predictor_gives_the_model_its_vertex_count():
    """segfast.load's LLaFS runner turns support masks into the model's V-point polygons."""
    import numpy as np

    from segfast.inference.systems import LLaFSRunner
    from tests.inference.tiny import picture

    runner = LLaFSRunner(tiny(num_vertices=8, max_objects=1).eval(), {})
    mask = np.zeros((50, 50), np.uint8)
    mask[10:30, 15:40] = 255
    out = runner.predict([picture()], ["box"], supports=[[(picture(50, 50, 2), mask)]])
    assert out[0][0].shape == (1, 45, 70)
