"""segfast.load(checkpoint).predict(image, query): masks at the image's size from each system's
own inference, the answer, the files Prediction.save writes, and clear errors."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import segfast
from segfast.frames import model_inputs, to_original
from tests.inference.tiny import picture, tiny_checkpoint


@pytest.fixture(scope="module")
def lisa(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("lisa") / "ckpt", "lisa")


def forced(model, token: str = "[SEG]", n: int = 2) -> dict:
    """Generation settings that make a random model answer `token` n times."""
    return {"sequence_bias": {(model.tokenizer.convert_tokens_to_ids(token),): 1e4}, "max_new_tokens": n}


def frame_batch(image, model, question: str) -> dict:
    batch = {k: v[None] for k, v in model_inputs(image, model.decoder.image_size, 32).items()}
    return {**batch, "conversation": [[{"question": question, "answer": None}]]}


def test_lisa_masks_are_the_models_own_at_the_images_size(lisa):
    checkpoint, model = lisa
    predictor = segfast.load(checkpoint, device="cpu", generate=forced(model))
    image = picture()
    pred = predictor.predict(Image.fromarray(image), "Please segment the red box.")
    assert predictor.system == "lisa"
    assert pred.text.split() == ["[SEG]", "[SEG]"]
    assert pred.masks.dtype == torch.bool and pred.masks.shape == (2, 45, 70)
    # the model as trained (in memory, not loaded) on SAM's frame, brought back to the image
    out = model.generate(
        frame_batch(image, model, "<image> Please segment the red box."), return_logits=True, **forced(model)
    )[0]
    assert torch.equal(pred.masks, to_original(out["logits"], out["masks"].shape[-2:], (45, 70)))
    # and the frame's unpadded crop, resized, is the same picture (not transposed or shifted)
    crop = torch.nn.functional.interpolate(out["masks"][:, None].float(), size=(45, 70), mode="nearest")[:, 0] > 0
    assert (crop == pred.masks).float().mean() > 0.9


def test_predict_batch_equals_one_by_one(lisa):
    checkpoint, model = lisa
    predictor = segfast.load(checkpoint, device="cpu", generate=forced(model))
    images = [picture(45, 70, 0), picture(30, 20, 1)]
    batched = predictor.predict_batch(images, ["Please segment the box.", "Can you segment the dog?"])
    for image, query, got in zip(images, ["Please segment the box.", "Can you segment the dog?"], batched):
        alone = predictor.predict(image, query)
        assert got.masks.shape == (2, *image.shape[:2]) and got.text == alone.text
        assert (got.masks == alone.masks).float().mean() > 0.99  # padding to the longest prompt


def test_save_writes_pngs_rles_and_an_overlay(lisa, tmp_path):
    from pycocotools import mask as mask_utils

    checkpoint, model = lisa
    pred = segfast.load(checkpoint, device="cpu", generate=forced(model)).predict(picture(), "Segment the box.")
    pred.masks[0, 5:20, 10:40] = True  # a known region, whatever the random model drew
    pred.masks[1] = False
    files = pred.save(tmp_path, "a")
    assert [p.name for p in files["masks"]] == ["a_mask0.png", "a_mask1.png"]
    for path, mask in zip(files["masks"], pred.masks):
        assert np.array_equal(np.asarray(Image.open(path)) > 0, mask.numpy())
    record = json.loads(files["json"].read_text())
    assert record["text"] == pred.text and record["query"] == "Segment the box." and record["labels"] is None
    for rle, mask in zip(record["masks"], pred.masks):
        assert np.array_equal(mask_utils.decode({**rle, "counts": rle["counts"].encode()}).astype(bool), mask.numpy())
    overlay = np.asarray(Image.open(files["overlay"]))
    changed = (overlay != pred.image).any(-1)
    assert changed[pred.masks[0].numpy()].all() and not changed[~pred.masks[0].numpy()].any()


def test_bf16_language_model_on_request(lisa):
    checkpoint, model = lisa
    predictor = segfast.load(checkpoint, device="cpu", dtype=torch.bfloat16, generate=forced(model))
    assert next(predictor.model.lm.parameters()).dtype == torch.bfloat16
    assert next(predictor.model.decoder.parameters()).dtype == torch.float32  # SAM under autocast
    pred = predictor.predict(picture(), "Please segment the box.")
    assert pred.masks.shape == (2, 45, 70) and pred.text.split() == ["[SEG]", "[SEG]"]


def test_a_run_directory_loads_its_newest_checkpoint(lisa, tmp_path):
    import shutil

    checkpoint, _ = lisa
    shutil.copytree(checkpoint, tmp_path / "checkpoints" / "step-000007")
    assert segfast.load(tmp_path, device="cpu").system == "lisa"


def test_clear_errors(lisa, tmp_path):
    checkpoint, _ = lisa
    predictor = segfast.load(checkpoint, device="cpu")
    with pytest.raises(TypeError, match="image: expected a path"):
        predictor.predict(3.5, "x")
    with pytest.raises(FileNotFoundError, match="image: no file"):
        predictor.predict(tmp_path / "missing.jpg", "x")
    with pytest.raises(ValueError, match="image: arrays must be uint8"):
        predictor.predict(np.zeros((4, 4, 3), np.float32), "x")
    with pytest.raises(ValueError, match="classes: only LaSagnA"):
        predictor.predict(picture(), "x", classes=["cat"])
    with pytest.raises(ValueError, match="unknown inference setting.*colour"):
        segfast.load(checkpoint, device="cpu", colour="red")
    with pytest.raises(FileNotFoundError, match="checkpoint: .* is not a directory"):
        segfast.load(tmp_path / "nothing")
