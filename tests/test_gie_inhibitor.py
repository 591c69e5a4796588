"""GIE's inhibitors: the projection term's maths, and that the default erases on ShapeWorld where the paper's
additive term with its 80 % window does not."""
import numpy as np
import pytest
import torch

import erasekit
from erasekit.concepts import resolve
from erasekit.detectors import shapeworld_detector
from erasekit.errors import ErasekitError
from erasekit.methods.gie.processor import projection_term, span_basis, spare, token_gains


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
                                              ({"self_fraction": 1.5}, "cross_fraction in (0, 1]"),
                                              ({"keep_share": 1.5}, "keep_share is a share")])
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


def test_spare_takes_the_share_of_e_rows_in_the_keep_span_and_leaves_other_rows():
    torch.manual_seed(2)
    values = torch.randn(2, 5, 6)                                 # (heads, rows, d): E's words are rows 1 and 2
    basis = torch.linalg.qr(torch.randn(2, 6, 2))[0]            # (heads, d, K) orthonormal
    along = lambda x: x @ basis @ basis.transpose(-1, -2)        # noqa: E731 — the component in the span
    spared = spare(values, basis, [1, 2], 0.5)
    assert torch.allclose(along(spared[:, 1:3]), 0.5 * along(values[:, 1:3]), atol=1e-5)
    assert torch.allclose(spared[:, 1:3] - along(spared[:, 1:3]), values[:, 1:3] - along(values[:, 1:3]),
                          atol=1e-5)                               # the part outside the span is untouched
    assert torch.equal(spared[:, [0, 3, 4]], values[:, [0, 3, 4]])  # rows that are not E's
    assert torch.allclose(along(spare(values, basis, [1, 2], 1.0)[:, 1:3]), torch.zeros(2, 2, 6), atol=1e-5)


def test_the_keep_span_of_repeated_words_is_their_span_and_nothing_more():
    torch.manual_seed(3)
    rows = torch.randn(2, 2, 6)
    basis = span_basis(torch.cat([rows, rows[:, :1]], dim=1))   # the first word twice
    projector = basis @ basis.transpose(-1, -2)
    assert torch.allclose(projector, span_basis(rows) @ span_basis(rows).transpose(-1, -2), atol=1e-5)
    assert torch.allclose(projector @ rows.transpose(-1, -2), rows.transpose(-1, -2), atol=1e-5)
    assert torch.allclose(projector.diagonal(dim1=-2, dim2=-1).sum(-1), torch.full((2,), 2.0), atol=1e-4)  # rank 2


STRIPED = ["a red triangle in the style of tobias renn", "a blue circle in the style of tobias renn on a white "
           "background", "a green square like a zebra"]


def test_the_style_preset_keeps_the_shapes_and_sparing_them_keeps_the_shape(shapeworld):
    """Without the keep span, pushing past the style costs shapes (ShapeWorld: 6/80 at w = −1.75); with half of
    it spared, the style goes and every shape stays — and keep_share = 0 is exactly the plain inhibitor."""
    spec = resolve("shapeworld/tobias renn")
    assert set(spec.keep) == {"circle", "square", "triangle", "cross", "star", "diamond"}
    seeds = [300, 301, 302, 303]
    prompts, shapes = [p for p in STRIPED for _ in seeds], [s for s in ("triangle", "circle", "square") for _ in seeds]

    def images(concept, prompts, seeds, **options):
        edit = erasekit.erase(shapeworld, "gie", concept, **options)
        edit.apply(shapeworld)
        try:
            return erasekit.generate(shapeworld, prompts, seeds, progress=False)
        finally:
            edit.remove(shapeworld)

    kept = images(spec, prompts, seeds * 3)
    assert shapeworld_detector("striped").rate(kept) == 0.0
    assert all(shapeworld_detector(s).rate([im]) == 1.0 for s, im in zip(shapes, kept))
    unspared = images(spec, prompts[:2], seeds[:2], keep_share=0.0)
    reference = images(resolve(spec, keep=[]), prompts[:2], seeds[:2])
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(unspared, reference))
    assert not np.array_equal(np.asarray(kept[0]), np.asarray(reference[0]))


def test_keep_words_that_do_not_fit_or_are_empty_are_refused(shapeworld):
    with pytest.raises(ErasekitError, match="the text encoder fits"):
        erasekit.erase(shapeworld, "gie", resolve("shapeworld/tobias renn", keep=["circle"] * 40))
    with pytest.raises(ErasekitError, match="tokenise to nothing"):
        erasekit.erase(shapeworld, "gie", resolve("shapeworld/tobias renn", keep=[" "]))
