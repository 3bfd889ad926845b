"""Each system through segfast.load: SegLLM's conversation keeps its memory, LaSagnA's class list
gives labelled masks, LLaVASeg, LLM-Seg and LLaFS answer with masks at the image's size."""

import numpy as np
import pytest
import torch

import segfast
from tests.inference.test_predict import forced
from tests.inference.tiny import picture, tiny_checkpoint


def test_segllm_conversation_remembers_earlier_rounds(tmp_path):
    checkpoint, model = tiny_checkpoint(tmp_path / "segllm", "segllm")
    predictor = segfast.load(checkpoint, device="cpu", generate=forced(model, n=1))
    image = picture()
    chat = predictor.chat()
    first = chat.ask(image, "Please segment the box.")
    second = chat.ask(image, "Segment the dog below the box.")
    assert chat.rounds == 2 and first.masks.shape == second.masks.shape == (1, 45, 70)
    # the same rounds through SegLLM's own round-by-round inference (segfast evaluate's path)
    batch = predictor.runner.frames([image])
    batch["conversation"] = [
        [
            {"question": "<image> Please segment the box.", "answer": None},
            {"question": "Segment the dog below the box.", "answer": None},
        ]
    ]
    replies = model.converse(batch, generate=True, **forced(model, n=1))[0]
    h, w = (int(x) for x in batch["valid_size"][0])
    for reply, got in zip(replies, (first, second)):
        assert reply["text"] == got.text
        frame = reply["mask"][None, :h, :w].float()
        resized = torch.nn.functional.interpolate(frame[None], size=(45, 70), mode="nearest")[0] > 0
        assert (resized == got.masks).float().mean() > 0.9
    # without the memory of round one, round two's mask is another one
    alone = predictor.predict(image, "Segment the dog below the box.")
    assert not torch.equal(alone.masks, second.masks)
    # another image starts afresh
    chat.ask(picture(30, 30, 3), "Please segment the box.")
    assert chat.rounds == 1
    chat.reset()
    assert chat.rounds == 0


def test_lasagna_class_list_gives_one_labelled_mask_per_present_class(tmp_path):
    checkpoint, _ = tiny_checkpoint(tmp_path / "lasagna", "lasagna", chunk_size=2)
    predictor = segfast.load(checkpoint, device="cpu")
    s = predictor.model.decoder.image_size
    left, right = torch.full((s, s), -5.0), torch.full((s, s), -5.0)
    left[:, : s // 2], right[:16, s // 3 :] = 2.0, 4.0  # overlapping: the higher logit wins

    def fake_generate(batch, return_logits, warn, images, **kw):
        names = batch["conversations"][0][0][0]["question"].split("segment the ")[1].split(" in this")[0].split(", ")
        replies = {("cat", "dog"): ("cat<SEG>, dog<NEG>", [left]), ("box",): ("box<SEG>", [right])}
        text, logits = replies[tuple(names)]
        return [{"text": text, "logits": torch.stack(logits)}]

    predictor.model.generate = fake_generate
    image = picture(40, 64)  # SAM's frame is the whole width, 40 of 64 rows
    pred = predictor.predict(image, "", classes=["cat", "dog", "box"])
    assert pred.labels == ["cat", "box"] and pred.masks.shape == (2, 40, 64)
    assert pred.text == "cat<SEG>, dog<NEG> box<SEG>"
    box = torch.zeros(40, 64, dtype=torch.bool)  # SAM's frame is the image at scale 1 here
    box[:16, s // 3 :] = True
    cat = torch.zeros(40, 64, dtype=torch.bool)
    cat[:, : s // 2] = True
    assert torch.equal(pred.masks[1], box) and torch.equal(pred.masks[0], cat & ~box)
    with pytest.raises(ValueError, match="classes: the class list is empty"):
        predictor.predict(image, "", classes=[])


def test_llavaseg_answers_with_its_reasoning_and_one_mask(tmp_path):
    checkpoint, _ = tiny_checkpoint(
        tmp_path / "llavaseg", "llavaseg", lora={"enabled": False}, adapter_dim=16, adapter_heads=2, max_new_tokens=4
    )
    predictor = segfast.load(checkpoint, device="cpu")
    pred = predictor.predict(picture(), "What in this image holds the food?")
    assert pred.masks.shape == (1, 45, 70) and isinstance(pred.text, str)
    with pytest.raises(ValueError, match="unknown inference setting"):
        segfast.load(checkpoint, device="cpu", question="{query}")


def test_llmseg_mask_is_a_proposal_at_full_resolution(tmp_path):
    from segfast.models.sam.proposals import ProposalGenerator
    from segfast.ops import unpack_masks
    from tests.models.sam_fixtures import blob_image, local_sam

    # top1_iou (Table 3's other row): one proposal, so the test can name it; the paper's IoP
    # threshold may choose none with random heads
    checkpoint, _ = tiny_checkpoint(tmp_path / "llmseg", "llm-seg", selection="top1_iou")
    predictor = segfast.load(checkpoint, device="cpu", max_proposals=8)
    predictor.runner.generator = ProposalGenerator(local_sam(), points_per_side=8)
    image = blob_image(0, 120, 200)
    pred = predictor.predict(image, "the red box")
    proposals = predictor.runner.generator.generate_batch([image])[0].top_k_by_area(8)
    dense = unpack_masks(proposals.packed, 200)
    assert len(dense) > 1 and pred.masks.shape == (1, 120, 200)
    assert any(torch.equal(pred.masks[0], d) for d in dense)  # top1_iou: one proposal, not resized


def test_llafs_needs_support_pairs(tmp_path):
    checkpoint, _ = tiny_checkpoint(tmp_path / "llafs", "llafs", num_query_tokens=4, image_size=32, max_objects=1)
    predictor = segfast.load(checkpoint, device="cpu")
    support = picture(50, 50, 2)
    mask = np.zeros((50, 50), np.uint8)
    mask[10:30, 15:40] = 255
    pred = predictor.predict(picture(), "box", support=[(support, mask)])
    assert pred.masks.shape == (1, 45, 70) and isinstance(pred.text, str)
    with pytest.raises(ValueError, match="support: LLaFS needs at least one"):
        predictor.predict(picture(), "box")
    with pytest.raises(ValueError, match="support: a mask must be"):
        predictor.predict(picture(), "box", support=[(support, np.zeros((2, 2, 2)))])


BF16_CASES = {
    "segllm": {},
    "lasagna": {},
    "llavaseg": dict(lora={"enabled": False}, adapter_dim=16, adapter_heads=2, max_new_tokens=4),
    "llm-seg": {},
    "llafs": dict(num_query_tokens=4, image_size=32, max_objects=1),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BF16_CASES))
def test_every_system_runs_with_a_bf16_language_model(tmp_path, name):
    """What CUDA gets by default (bf16 language model, the rest under autocast), here on the CPU."""
    checkpoint, _ = tiny_checkpoint(tmp_path / name, name, **BF16_CASES[name])
    short = {"generate": {"max_new_tokens": 4}} if name in ("segllm", "lasagna") else {}
    predictor = segfast.load(checkpoint, device="cpu", dtype=torch.bfloat16, **short)
    assert next(predictor.runner.lm.parameters()).dtype == torch.bfloat16
    mask = np.zeros((50, 50), np.uint8)
    mask[10:30, 10:30] = 1
    support = [(picture(50, 50, 2), mask)] if name == "llafs" else None
    pred = predictor.predict(picture(), "box", support=support)
    assert pred.masks.shape[1:] == (45, 70) and pred.masks.dtype == torch.bool
