import pytest
import torch

from segfast.models.llafs import COORDINATE_BINS, AnswerError, coordinate_tokens, format_answer, parse_answer
from segfast.models.llafs.answer import format_points, parse_points, read_answer


def test_round_trip_within_half_a_bin(gen):
    polys = torch.rand(3, 16, 2, generator=gen, dtype=torch.float64) * torch.tensor([640.0, 480.0])
    text = format_answer(polys, 640, 480)
    assert text.count("[c-") == 3 * 32 and text.startswith("((([c-") and text.endswith("])))")  # the answer tuple
    back = parse_answer(text, 640, 480)
    assert len(back) == 3
    for got, want in zip(back, polys):
        assert ((got - want).abs() <= torch.tensor([640 / 384 / 2, 480 / 384 / 2]) + 1e-9).all()


def test_tokens_and_edges():
    tokens = coordinate_tokens()
    assert len(tokens) == COORDINATE_BINS == len(set(tokens)) and tokens[0] == "[c-0]" and tokens[-1] == "[c-383]"
    corner = torch.tensor([[[0.0, 0.0]] * 15 + [[1e9, -5.0]]], dtype=torch.float64)  # clamped into range
    assert parse_answer(format_answer(corner, 100, 100), 100, 100)[0][-1].tolist() == [
        100 * 383.5 / 384,
        100 * 0.5 / 384,
    ]
    assert format_answer([], 10, 10) == "()" and parse_answer(" ( ) ", 10, 10) == []
    spaced = format_answer(torch.zeros(1, 16, 2), 10, 10).replace(",", " , ")
    assert len(parse_answer(spaced, 10, 10)) == 1


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "'\\('"),
        ("((([c-1],[c-2])))", "has 1 vertices, expected 16"),
        ("((" + ",".join(["([c-1],[c-2])"] * 16) + "))garbage", "end of text"),
        ("((" + ",".join(["([c-1],[c-2])"] * 15 + ["([c-1],[c-400])"]) + "))", "bin below 384"),
        ("((" + ",".join(["([c-1],[c-2])"] * 15 + ["([c-1],[x-2])"]) + "))", "coordinate token"),
        ("((" + ",".join(["([c-1],[c-2])"] * 16), "end of text"),
        ("(" + ",".join(["([c-1],[c-2])"] * 16) + ")", "expected '\\(' at character 2"),  # no answer tuple
        ("((" + ",".join(["([c-1] [c-2])"] * 16) + "))", "','"),
    ],
)
def test_malformed_answers_are_rejected_with_a_reason(text, reason):
    with pytest.raises(AnswerError, match=reason):
        parse_answer(text, 100, 100)


def test_coordinate_tokens_are_single_ids(tmp_path):
    from transformers import AutoTokenizer

    from segfast.models.llm import add_special_tokens
    from tests.train.conftest import write_tiny_llm

    tokenizer = AutoTokenizer.from_pretrained(str(write_tiny_llm(tmp_path)))
    ids = add_special_tokens(tokenizer, coordinate_tokens())
    text = format_answer(torch.zeros(1, 16, 2), 10, 10)
    encoded = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert sum(i in set(ids) for i in encoded) == 32
    assert parse_answer(tokenizer.decode(encoded), 10, 10)[0].shape == (16, 2)


def test_an_answer_cut_short_keeps_every_complete_polygon(gen):
    polys = torch.rand(3, 16, 2, generator=gen, dtype=torch.float64) * 100
    text = format_answer(polys, 100, 100)
    cut = text[: text.rindex("),((") + 40]  # inside the third object
    kept, why = read_answer(cut, 100, 100)
    assert len(kept) == 2 and why is not None and "character" in why
    for got, want in zip(kept, polys[:2]):
        assert (got - want).abs().max() <= 100 / 384 / 2 + 1e-9
    assert read_answer(text, 100, 100)[1] is None and len(read_answer(text, 100, 100)[0]) == 3
    with pytest.raises(AnswerError):
        parse_answer(cut, 100, 100)  # the strict parser still refuses it
    assert read_answer("nonsense", 100, 100)[0] == []


def test_hidden_vertices_round_trip(gen):
    pts = torch.rand(5, 2, generator=gen, dtype=torch.float64) * 64
    back = parse_points(format_points(pts, 64, 64, 64), 64, 64, 5, 64)
    assert (back - pts).abs().max() <= 0.5 + 1e-9
    with pytest.raises(AnswerError, match="4 vertices, expected 5"):
        parse_points(format_points(pts[:4], 64, 64, 64), 64, 64, 5, 64)
