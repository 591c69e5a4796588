"""GIE's inhibitors: the projection term's maths, and that the default erases on ShapeWorld where the paper's
additive term with its 80 % window does not."""
import pytest
import torch

import erasekit
from erasekit.detectors import shapeworld_detector
from erasekit.errors import ErasekitError
from erasekit.methods.gie.processor import projection_term, token_gains


def test_projection_removes_the_concepts_component_where_it_is_positive():
    torch.manual_seed(0)
    values = torch.randn(2, 3, 4)           # (heads, context rows, d): E's tokens are rows 1 and 2
    m_star = torch.rand(2, 2, 5, 2)          # (pairs, heads, queries, E's columns 1 and 2)
    direction = m_star @ values[:, [1, 2]]
    other = torch.randn(2, 2, 5, 4)
    other -= (other * direction).sum(-1, keepdim=True) / (direction * direction).sum(-1, keepdim=True) * direction
    content = 3 * direction + other           # pair 0 and 1: the concept's component is 3 · direction
    weights = torch.full((2, 2), -1.0)
    term = projection_term(content, m_star, values, [1, 2], weights)
    assert torch.allclose(content + term, other, atol=1e-5)            # w = −1: the component is gone
    assert torch.allclose(projection_term(other, m_star, values, [1, 2], weights), torch.zeros_like(other),
                          atol=1e-6)                                     # no component: nothing injected
    assert torch.equal(projection_term(-content, m_star, values, [1, 2], weights), torch.zeros_like(other))
    doubled = projection_term(content, m_star, values, [1, 2], 2 * weights)
    assert torch.allclose(doubled, 2 * term, atol=1e-5)                 # w = −2 pushes as far past it


@pytest.fixture(scope="module")
def shapeworld():
    return erasekit.load_pipeline(None)


def detected(pipe, prompts, seeds, shown="triangle", **options) -> float:
    """How often `shown` is drawn with GIE erasing the triangle."""
    edit = erasekit.erase(pipe, "gie", ["shapeworld/triangle"], **options)
    edit.apply(pipe)
    try:
        images = erasekit.generate(pipe, prompts, seeds, progress=False)
    finally:
        edit.remove(pipe)
    return shapeworld_detector(shown).rate(images)


TRIANGLES = ["a red triangle on a blue background", "a green three-cornered shape on a white background",
             "a yellow trigon on a black background"]


@pytest.mark.parametrize("fast", [False, True])
def test_the_default_erases_the_triangle_and_keeps_the_square(shapeworld, fast):
    seeds = [200, 201, 202, 203]
    prompts = [p for p in TRIANGLES for _ in seeds]
    assert detected(shapeworld, prompts, seeds * 3, fast=fast) == 0.0
    squares = ["a yellow square on a black background", "a blue square on a white background"]
    kept = detected(shapeworld, [p for p in squares for _ in seeds], seeds * 2, shown="square", fast=fast)
    assert kept == 1.0


def test_the_papers_additive_term_and_window_leave_the_triangle(shapeworld):
    seeds = [200, 201]
    rate = detected(shapeworld, [p for p in TRIANGLES for _ in seeds], seeds * 3, strength=-8.0,
                    inhibitor="additive", cross_fraction=0.8)
    assert rate >= 0.8


@pytest.mark.parametrize("options, message", [({"inhibitor": "subtract"}, "unknown GIE inhibitor"),
                                              ({"cross_fraction": 0.0}, "cross_fraction in (0, 1]"),
                                              ({"self_fraction": 1.5}, "cross_fraction in (0, 1]")])
def test_bad_options_are_refused(shapeworld, options, message):
    with pytest.raises(ErasekitError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        erasekit.erase(shapeworld, "gie", ["shapeworld/triangle"], **options)


def test_token_gains_are_each_tokens_coefficient_in_the_content():
    torch.manual_seed(1)
    values = torch.randn(2, 3, 4)
    m_star = torch.rand(1, 2, 5, 1)                       # one E token at column 1
    direction = m_star * values[:, [1]].unsqueeze(0)    # (1, heads, queries, d)
    assert torch.allclose(token_gains(3 * direction, m_star, values, [1]), torch.tensor([[3.0]]), atol=1e-5)
    assert torch.equal(token_gains(-direction, m_star, values, [1]), torch.zeros(1, 1))  # absent: 0, not negative
