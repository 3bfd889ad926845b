"""segfast serve in a real headless browser: upload an image, type a query, press Segment; the
overlay and the answer appear, the downloaded mask PNG is the model's mask, a second question
goes on with the conversation and Clear forgets it."""

import io
import urllib.request

import numpy as np
import pytest
from PIL import Image

from tests.serve.browser import browser, css, needs_browser, served, wait
from tests.serve.standin import StandInPredictor, expected_mask


def picture() -> np.ndarray:
    """(H, W, 3) uint8, not square, red rising from left to right so each round's mask differs."""
    image = np.zeros((48, 80, 3), np.uint8)
    image[:, :, 0] = np.linspace(0, 255, 80, dtype=np.uint8)[None]
    image[10:30, 20:60, 1] = 200
    return image


def fetch(url: str) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(urllib.request.urlopen(url, timeout=30).read())))


def answer(driver) -> str:
    boxes = css(driver, "#answer textarea")
    return boxes[0].get_attribute("value") if boxes else ""


def ask(driver, query: str, before: str) -> str:
    """Types `query`, presses Segment and waits for a new answer beside an overlay."""
    box = css(driver, "#query textarea")[0]
    box.clear()
    box.send_keys(query)
    css(driver, "#go")[0].click()
    wait(driver, lambda d: css(d, "#overlay img") and answer(d) not in ("", before))
    return answer(driver)


def mask_links(driver) -> list:
    return [a.get_attribute("href") for a in css(driver, "#masks a") if a.get_attribute("href")]


@pytest.mark.slow
def test_upload_ask_download_go_on_and_clear(tmp_path):
    needs_browser()
    image = picture()
    Image.fromarray(image).save(tmp_path / "picture.png")
    with served(StandInPredictor()) as url, browser() as driver:
        driver.get(url)
        wait(driver, lambda d: css(d, "#image input[type=file]"))
        css(driver, "#image input[type=file]")[0].send_keys(str(tmp_path / "picture.png"))
        wait(driver, lambda d: css(d, "#image img"))

        first = ask(driver, "Please segment the red part.", "")
        assert first == "round 1: Please segment the red part. [SEG]"
        wait(driver, lambda d: any(h.endswith("round1_mask0.png") for h in mask_links(d)))
        (link,) = [h for h in mask_links(driver) if h.endswith(".png")]
        assert np.array_equal(fetch(link) > 0, expected_mask(image, 1))
        shown = fetch(css(driver, "#overlay img")[0].get_attribute("src"))[:, :, :3]
        assert np.array_equal(shown, np.array(StandInPredictor().chat().ask(image, "").overlay()))

        second = ask(driver, "Now the brighter half of it.", first)
        assert second.startswith("round 2:")  # the conversation went on
        wait(driver, lambda d: any(h.endswith("round2_mask0.png") for h in mask_links(d)))
        (link,) = [h for h in mask_links(driver) if h.endswith(".png")]
        assert np.array_equal(fetch(link) > 0, expected_mask(image, 2))
        assert "remembers 2 round" in css(driver, "#status")[0].text

        css(driver, "#clear")[0].click()
        wait(driver, lambda d: answer(d) == "" and not css(d, "#overlay img"))
        assert "no round remembered" in css(driver, "#status")[0].text
        assert ask(driver, "Please segment the red part.", "").startswith("round 1:")
