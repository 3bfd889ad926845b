"""segfast serve in a real headless browser over a tiny SegLLM checkpoint loaded by segfast.load:
upload an image, type a query, press Segment; the overlay and the answer appear and the
downloaded mask PNGs are the model's masks; a second question goes on with the conversation (its
masks are the second round's, not a fresh question's) and Clear forgets it."""

import io
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image

import segfast
from tests.inference.tiny import picture
from tests.serve.browser import browser, css, needs_browser, served, wait

FIRST, SECOND = "Please segment the box.", "Now the one left of it."


@pytest.fixture(scope="module")
def segllm(segllm_checkpoint):
    checkpoint, settings = segllm_checkpoint
    return segfast.load(checkpoint, device="cpu", **settings)


def fetch(url: str) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(urllib.request.urlopen(url, timeout=30).read())))


def answer(driver) -> str:
    boxes = css(driver, "#answer textarea")
    return boxes[0].get_attribute("value") if boxes else ""


def links(driver) -> list:
    return [a.get_attribute("href") for a in css(driver, "#masks a") if a.get_attribute("href")]


def ask(driver, query: str, round_: int) -> list:
    """Types `query`, presses Segment, waits for round `round_`'s files beside an overlay and an
    answer, and returns the downloaded masks."""
    box = css(driver, "#query textarea")[0]
    box.clear()
    box.send_keys(query)
    css(driver, "#go")[0].click()
    done = lambda d: any(h.endswith(f"round{round_}.json") for h in links(d)) and css(d, "#overlay img") and answer(d)
    wait(driver, done)
    pngs = [h for h in links(driver) if h.endswith(".png")]
    assert [h.rsplit("/", 1)[1] for h in pngs] == [f"round{round_}_mask{i}.png" for i in range(len(pngs))]
    return [fetch(h) > 0 for h in pngs]


def same(downloaded: list, masks: torch.Tensor) -> bool:
    return len(downloaded) == len(masks) and all(np.array_equal(d, m.numpy()) for d, m in zip(downloaded, masks))


@pytest.mark.slow
def test_upload_ask_download_go_on_and_clear(segllm, tmp_path):
    needs_browser()
    image = picture()
    Image.fromarray(image).save(tmp_path / "picture.png")
    talk = segllm.chat()
    first, second = talk.ask(image, FIRST), talk.ask(image, SECOND)
    fresh = segllm.chat().ask(image, SECOND)
    assert not torch.equal(second.masks, fresh.masks)  # so the page's second round shows it kept the first
    with served(segllm) as url, browser() as driver:
        driver.get(url)
        wait(driver, lambda d: css(d, "#image input[type=file]"))
        css(driver, "#image input[type=file]")[0].send_keys(str(tmp_path / "picture.png"))
        wait(driver, lambda d: css(d, "#image img"))

        assert same(ask(driver, FIRST, 1), first.masks) and answer(driver) == first.text
        shown = fetch(css(driver, "#overlay img")[0].get_attribute("src"))[:, :, :3]
        assert np.array_equal(shown, np.array(first.overlay()))

        assert same(ask(driver, SECOND, 2), second.masks)
        assert "remembers 2 round" in css(driver, "#status")[0].text

        css(driver, "#clear")[0].click()
        wait(driver, lambda d: answer(d) == "" and not css(d, "#overlay img") and not links(d))
        assert "no round remembered" in css(driver, "#status")[0].text
        assert same(ask(driver, SECOND, 1), fresh.masks)
