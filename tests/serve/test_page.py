"""The handlers of the segfast serve page (segfast.serve.app.Page), called without a browser over a
stand-in predictor: what one question returns, rounds kept until Clear or a new image, systems
without a memory, LaSagnA's classes and LLaFS's support, and errors that name the missing input."""

import json
import os
import time

import numpy as np
import pytest
from PIL import Image

from segfast.serve.app import KEEP_SECONDS, Page, build_app, require_gradio
from tests.serve.standin import StandInPredictor, expected_mask


def picture(seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8))


def read_mask(path) -> np.ndarray:
    return np.array(Image.open(path)) > 0


def test_one_question_gives_the_overlay_the_answer_and_the_mask_files(tmp_path):
    page, image = Page(StandInPredictor(), tmp_path), picture()
    overlay, answer, files, conversation, history, status = page.ask(image, "  Please segment it. ", None, [])
    prediction = StandInPredictor().chat().ask(image, "Please segment it.")
    assert answer == prediction.text == "round 1: Please segment it. [SEG]"
    assert np.array_equal(np.array(overlay), np.array(prediction.overlay()))
    assert [p.rsplit("/", 1)[1] for p in files] == ["round1_mask0.png", "round1.json"]
    assert np.array_equal(read_mask(files[0]), expected_mask(np.array(image), 1))
    assert json.loads(open(files[1]).read())["masks"] == prediction.rles()
    assert history == [{"role": "user", "content": "Please segment it."}, {"role": "assistant", "content": answer}]
    assert "remembers 1 round" in status and conversation.rounds == 1


def test_rounds_are_kept_until_clear(tmp_path):
    page, image = Page(StandInPredictor(), tmp_path), picture()
    *_, conversation, history, _ = page.ask(image, "first", None, [])
    _, answer, files, conversation, history, status = page.ask(image, "second", conversation, history)
    assert answer.startswith("round 2:") and np.array_equal(read_mask(files[0]), expected_mask(np.array(image), 2))
    assert files[0].endswith("round2_mask0.png")  # a new file: the first round's stays downloadable
    assert [m["content"] for m in history] == ["first", "round 1: first [SEG]", "second", answer]
    assert "remembers 2 round" in status
    overlay, answer, files, conversation, history, status = page.clear(conversation)
    assert (overlay, answer, files, history) == (None, "", None, []) and conversation.rounds == 0
    assert "no round remembered" in status
    _, answer, files, *_ = page.ask(image, "again", conversation, history)
    assert answer.startswith("round 1:") and np.array_equal(read_mask(files[0]), expected_mask(np.array(image), 1))


def test_a_new_image_starts_the_shown_conversation_anew(tmp_path):
    page = Page(StandInPredictor(), tmp_path)
    *_, conversation, history, _ = page.ask(picture(0), "first", None, [])
    _, answer, _, conversation, history, _ = page.ask(picture(1), "other", conversation, history)
    assert answer.startswith("round 1:") and [m["content"] for m in history] == ["other", answer]


def test_a_system_without_memory_says_so_and_shows_one_round(tmp_path):
    page, image = Page(StandInPredictor("lisa", remembers=False), tmp_path), picture()
    *_, conversation, history, _ = page.ask(image, "first", None, [])
    _, answer, _, _, history, status = page.ask(image, "second", conversation, history)
    assert [m["content"] for m in history] == ["second", answer]
    assert status == "lisa: each query is answered on its own (no round remembered)."


def test_files_older_than_an_hour_are_swept(tmp_path):
    page = Page(StandInPredictor(), tmp_path)
    old, recent = tmp_path / "old", tmp_path / "recent"
    for folder, age in ((old, KEEP_SECONDS + 60), (recent, KEEP_SECONDS - 60)):
        folder.mkdir()
        (folder / "round1_mask0.png").write_bytes(b"")
        os.utime(folder, (time.time() - age, time.time() - age))
    _, _, files, *_ = page.ask(picture(), "first", None, [])
    assert not old.exists() and recent.exists() and all(os.path.exists(f) for f in files)


def test_a_missing_image_or_query_is_an_error_naming_it(tmp_path):
    gr, page = require_gradio(), Page(StandInPredictor(), tmp_path)
    with pytest.raises(gr.Error, match="image: upload an image"):
        page.ask(None, "Please segment it.", None, [])
    with pytest.raises(gr.Error, match="query: type what to segment"):
        page.ask(picture(), "   ", None, [])


def test_lasagna_classes_make_one_prediction_with_named_masks(tmp_path):
    predictor = StandInPredictor("lasagna", remembers=False)
    page, image = Page(predictor, tmp_path), picture()
    _, answer, files, *_, status = page.ask(image, "Segment them.", None, [], classes=" cat, dog ,")
    assert predictor.calls == [{"query": "Segment them.", "classes": ["cat", "dog"], "support": None}]
    assert [f.rsplit("/", 1)[1] for f in files] == ["round1_mask0.png", "round1_mask1.png", "round1.json"]
    assert np.array_equal(read_mask(files[1]), expected_mask(np.array(image), 2))
    assert answer == "predicted: Segment them." and status.endswith("Masks: 0: cat, 1: dog.")


def test_llafs_support_makes_one_prediction_and_the_class_name_may_be_empty(tmp_path):
    predictor = StandInPredictor("llafs", remembers=False, refuses="support: LLaFS needs at least one pair")
    page, image, support, mask = Page(predictor, tmp_path), picture(0), picture(1), np.eye(30, 50, dtype=np.uint8)
    page.ask(image, "", None, [], support_image=support, support_mask=mask)
    ((call),) = predictor.calls
    assert call["query"] == "" and call["support"][0][0] is support and call["support"][0][1] is mask
    gr = require_gradio()
    with pytest.raises(gr.Error, match="support: give both the support image and its mask"):
        page.ask(image, "dog", None, [], support_image=support)
    with pytest.raises(gr.Error, match="support: LLaFS needs at least one pair"):  # the predictor's own refusal
        page.ask(image, "dog", None, [])


def test_the_page_has_the_elements_a_browser_drives_and_the_systems_own_inputs(tmp_path):
    def shown(system) -> set:
        app = build_app(StandInPredictor(system), files_dir=tmp_path)
        assert app.title == f"segfast: {system}"
        visible = {c["id"] for c in app.config["components"] if c["props"].get("visible", True) is True}
        return {c["props"].get("elem_id") for c in app.config["components"] if c["id"] in visible}

    assert {"image", "query", "go", "clear", "overlay", "answer", "masks", "history", "status"} <= shown("segllm")
    assert not {"classes", "support", "support_mask"} & shown("segllm")
    assert "classes" in shown("lasagna") and not {"support", "support_mask"} & shown("lasagna")
    assert {"support", "support_mask"} <= shown("llafs") and "classes" not in shown("llafs")


def test_every_way_to_start_again_forgets_the_rounds_and_all_wait_for_one_model(tmp_path):
    app = build_app(StandInPredictor(), files_dir=tmp_path)
    names = {block._id: getattr(block, "elem_id", None) for block in app.blocks.values()}
    wired = {(names[t[0]], t[1]): (f.fn.__name__, f.concurrency_id) for f in app.fns.values() for t in f.targets}
    assert wired == {
        ("go", "click"): ("ask", "model"),
        ("query", "submit"): ("ask", "model"),
        **{start: ("clear", "model") for start in [("clear", "click"), ("image", "upload"), ("image", "clear")]},
        ("history", "clear"): ("clear", "model"),  # the conversation's own bin
    }
