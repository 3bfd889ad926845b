"""The evaluation hooks of LISA, LLaVASeg and LLM-Seg count IoU at each image's original
resolution (LISA's and LLM-Seg's validation), with ignored pixels left out, not in the model's
square frame; segfast evaluate --benchmark prints the protocol beside the papers' numbers."""

import re

import pytest
import torch

from segfast.frames import frame_masks, valid_size
from segfast.metrics import IoUMeter
from segfast.ops import pack_masks

pytest.importorskip("segment_anything")

SIZE = 64


def _two_images():
    """Two images of different shapes: per-image IoUs 0.5 and 0.25 (cIoU 975 / 3150 at their own
    resolution); the second has an ignored band that the prediction covers."""
    gts = [torch.zeros(1, 30, 50, dtype=torch.bool), torch.zeros(1, 120, 40, dtype=torch.bool)]
    gts[0][0, :15, :25] = True
    gts[1][0, :60, :] = True
    preds = [gts[0].clone(), torch.zeros_like(gts[1])]
    preds[0][0, :15, 25:] = True
    preds[1][0, :15, :] = True
    ignore = [torch.zeros(30, 50, dtype=torch.bool), torch.zeros(120, 40, dtype=torch.bool)]
    preds[1][0, 100:, :] = True  # predicted, but ignored: must not count
    ignore[1][100:, :] = True
    batch = {
        "valid_size": torch.tensor([valid_size(30, 50, SIZE), valid_size(120, 40, SIZE)]),
        "original_masks": gts,
        "original_ignore": ignore,
    }
    return preds, batch


def _logits(preds):
    return [frame_masks(p, SIZE).float() * 20 - 10 for p in preds]


def _expected():
    return (375 + 600) / (750 + 2400)


def test_lisa_scores_at_the_original_resolution():
    from tests.models.seg_family import build

    model = build("lisa")
    preds, batch = _two_images()
    model.run = lambda b: (None, _logits(preds))
    meters = {"iou": IoUMeter()}
    model.evaluate(batch, meters)
    assert meters["iou"].compute()["cIoU"] == pytest.approx(_expected(), abs=0.01)


def test_llavaseg_scores_at_the_original_resolution():
    from tests.models.test_llavaseg import _model

    model = _model()
    preds, batch = _two_images()
    model.chain_of_thought = lambda b: None
    model.mask_logits = lambda b, records: _logits(preds)
    meters = {"iou": IoUMeter()}
    model.evaluate(batch, meters)
    assert meters["iou"].compute()["cIoU"] == pytest.approx(_expected(), abs=0.01)


def test_llmseg_scores_the_chosen_proposals_as_sam_made_them():
    from segfast.data.referring import pad_square
    from tests.models.seg_family import build

    model = build("llm-seg")
    preds, batch = _two_images()
    # per image: the prediction split in two proposals (both chosen) and a decoy (not chosen),
    # at the image's resolution (SAM ran on it unscaled), padded square as the loader gives them
    proposals, chosen = [], torch.zeros(2, 4, dtype=torch.bool)
    for b, p in enumerate(preds):
        top, rest = p.clone(), p.clone()
        top[:, p.shape[1] // 2 :] = False
        rest[:, : p.shape[1] // 2] = False
        proposals.append(pad_square(pack_masks(torch.cat([top, ~p, rest])), *p.shape[1:]))
        chosen[b, [0, 2]] = True
    batch["proposals"] = proposals
    batch["proposal_size"] = torch.tensor([p.shape[1:] for p in preds])
    model.predict = lambda b: {"chosen": chosen, "owner": torch.tensor([0, 1])}
    meters = {"iou": IoUMeter()}
    model.evaluate(batch, meters)
    assert meters["iou"].compute()["cIoU"] == pytest.approx(_expected(), abs=1e-9)  # exact: no resizing


def test_segfast_evaluate_benchmark_prints_the_protocol_and_the_papers(tmp_path, capsys):
    """A tiny LISA trained on generated data, evaluated on a fake refCOCO val: every sentence is
    scored once and the output names the protocol and the papers' numbers."""
    from segfast.cli import main
    from tests.data.layouts import refer
    from tests.models.seg_family import train_tiny

    train_tiny(tmp_path / "run", {"name": "lisa"}, {"name": "seg-conversations", "options": {"length": 4}}, steps=1)
    root = refer(tmp_path / "refer")
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(tmp_path / "run" / "checkpoints" / "step-000001"),
                "--benchmark",
                "refcoco-val",
                f"data.options.root={root}",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert '"eval/samples": 3' in out and '"eval/iou/samples": 3' in out
    assert "every sentence of every referent" in out and "What is {sentence} in this image?" in out
    assert re.search(r"LaSagnA Table 3, LaSagnA \(ours\) \(refcoco val\): cIoU 76\.8 \(segfast [+-]\d+\.\d\d\)", out)
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(tmp_path / "run" / "checkpoints" / "step-000001"),
                "--benchmark",
                "refcoco-val",
                f"data.options.root={root}",
                "data.options.dataset=refcoco+",
            ]
        )
        == 2
    )
    assert "fixes data.options.dataset='refcoco'" in capsys.readouterr().err
