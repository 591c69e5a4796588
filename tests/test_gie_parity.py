"""GIE's authors' behaviour behind its options (issue #17), each pinned against a re-derivation written here."""
import json

import pytest
import torch

import erasekit
from erasekit.cli.erase import parse_options
from erasekit.cli.main import main
from erasekit.concepts import resolve
from erasekit.detectors import Detector
from erasekit.edits import active_session
from erasekit.methods import gie
from erasekit.methods.gie.adapter_training import AdapterTraining, fit, smallest_strengths
from erasekit.methods.gie.parity import active_steps, joint_contexts
from erasekit.methods.gie.scale import WEIGHTS, ScaleAdapter, load_adapter, save_adapter
from erasekit.methods.registry import make_config

PROMPT, TARGET = "a photo of a cat", "red nude"


@pytest.fixture(scope="module")
def sd1(tiny_dirs):
    return erasekit.load_pipeline(tiny_dirs["sd1"])


def generate(pipe, edit, steps, prompts=(PROMPT,), seeds=(3,)):
    edit.apply(pipe)
    try:
        return erasekit.generate(pipe, list(prompts), list(seeds), steps=steps, progress=False)
    finally:
        edit.remove(pipe)


def lengths(pipe):
    """(P's word count n, E's word count m, L)."""
    plain, star = erasekit.encode(pipe, [PROMPT]), erasekit.encode(pipe, [TARGET])
    return int(plain.eot_index[0]) - 1, int(star.eot_index[0]) - 1, plain.embeddings.shape[1]


def test_authors_rows_are_the_spliced_texts_joint_encoding(sd1):
    n, m, length = lengths(sd1)
    assert m == 2
    joint = erasekit.encode(sd1, [f"{PROMPT} {TARGET}"]).embeddings[0]
    star = erasekit.encode(sd1, [TARGET]).embeddings[0]
    plain = erasekit.encode(sd1, [PROMPT])
    rows, reads = joint_contexts(sd1, [PROMPT], TARGET, plain, star, m)
    # by hand: P's words as encoded with E after them, E's words alone, then the slot of P''s EoT takes the joint
    # row at P's EoT position (E's first word), and every later slot the joint row at its own position
    expected = [joint[0], *[joint[1 + i] for i in range(n)], star[1], star[2], joint[n + 1]]
    expected += [joint[j] for j in range(n + m + 2, length)]
    torch.testing.assert_close(rows[0], torch.stack(expected), rtol=0, atol=0)
    assert not torch.allclose(rows[0, n + m + 1], plain.embeddings[0, n + 1])  # not P's own EoT row
    assert not torch.allclose(rows[0, -1], plain.embeddings[0, -1])            # padding that has seen E
    assert reads[0].tolist() == [0, 1, 2, 3, 4, 5, -1, -1, 6] + list(range(9, length))  # n = 5, m = 2


def test_authors_rows_copy_branch_0s_map_less_the_padding_after_its_eot(sd1):
    """One cross-attention call of branch 1 recomputed from its inputs: branch 0's map over P's positions, the m
    columns right after P's EoT removed (nothing renormalised), over the values of the joint encoding at P's
    positions, plus w · M*·V(Enc(E)) for E's words."""
    n, m, length = lengths(sd1)
    layer = erasekit.find_cross_attention(sd1.unet)[0].module
    calls = []
    handle = layer.register_forward_hook(
        lambda module, args, kwargs, out: calls.append((args[0] if args else kwargs["hidden_states"],
                                                        kwargs["encoder_hidden_states"], out)), with_kwargs=True)
    try:
        generate(sd1, erasekit.erase(sd1, "gie", [TARGET], strength=-3.0, parity_rows=True,
                                     inhibitor="additive"), steps=1)
    finally:
        handle.remove()
    x, context, out = calls[0]  # batch [uncond, P' (branch 1), P (branch 0, appended by the hook)]
    heads = layer.heads

    def split(t):  # (tokens, inner) → (heads, tokens, head_dim)
        return t.view(t.shape[0], heads, -1).transpose(0, 1)
    with torch.no_grad():
        q0, q1, k0 = split(layer.to_q(x[2])), split(layer.to_q(x[1])), split(layer.to_k(context[2]))
        m0 = (q0 @ k0.transpose(-1, -2) * layer.scale).softmax(-1)
        keep = torch.ones(length)
        keep[n + 2:n + 2 + m] = 0
        joint = erasekit.encode(sd1, [f"{PROMPT} {TARGET}"]).embeddings[0]
        star = erasekit.encode(sd1, [TARGET]).embeddings[0][1:m + 1]
        m_star = (q1 @ split(layer.to_k(erasekit.encode(sd1, [TARGET]).embeddings[0])).transpose(-1, -2)
                  * layer.scale).softmax(-1)[..., 1:m + 1]
        mixed = (m0 * keep) @ split(layer.to_v(joint)) - 3.0 * m_star @ split(layer.to_v(star))
        expected = layer.to_out[0](mixed.transpose(0, 1).reshape(x.shape[1], -1))
    torch.testing.assert_close(out[1], expected, rtol=1e-4, atol=1e-5)


def test_authors_rows_need_parity_mode_and_reach_the_cli(sd1):
    with pytest.raises(erasekit.ErasekitError, match="needs parity mode"):
        erasekit.erase(sd1, "gie", ["nude"], parity_rows=True, fast=True)
    options = parse_options(["parity_rows=true", "parity_schedule=true"])
    assert make_config("gie", **options) == gie.GIEConfig(parity_rows=True, parity_schedule=True)


# Window lengths derived by hand. Self-attention, 40 %: 0.4·T is 8, 10, 20 for T = 20, 25, 50 (both rules agree),
# 2.8, 3.6, 9.2 for T = 7, 9, 23: the authors' int() takes 2, 3, 9, erasekit's "step < 0.4·T" counts 3, 4, 10.
# Cross-attention, 80 %: the authors' 0.8·(T + 1) is 16.8, 20.8, 40.8, 6.4, 8.0, 19.2 → 16, 20, 40, 6, 8, 19;
# erasekit's ceil(0.8·T) of 16, 20, 40, 5.6, 7.2, 18.4 gives the same.
@pytest.mark.parametrize("steps,authors_self,ours_self,cross", [
    (20, 8, 8, 16), (25, 10, 10, 20), (50, 20, 20, 40), (7, 2, 3, 6), (9, 3, 4, 8), (23, 9, 10, 19)])
def test_step_windows(steps, authors_self, ours_self, cross):
    assert active_steps(0.4, steps, cross=False, authors=True) == authors_self
    assert active_steps(0.4, steps, cross=False, authors=False) == ours_self
    assert active_steps(0.8, steps, cross=True, authors=True) == cross
    assert active_steps(0.8, steps, cross=True, authors=False) == cross


@pytest.mark.parametrize("parity_schedule,expected", [(False, [0, 1, 2]), (True, [0, 1])])
def test_the_session_copies_self_attention_maps_in_its_window(sd1, monkeypatch, parity_schedule, expected):
    steps_seen = set()
    copy = gie.GIEAttention._copy_maps

    def spy(self, *args):
        steps_seen.add(self.session.step)
        return copy(self, *args)
    monkeypatch.setattr(gie.GIEAttention, "_copy_maps", spy)
    edit = erasekit.erase(sd1, "gie", ["nude"], parity_schedule=parity_schedule, low_resolution_divisor=1)
    generate(sd1, edit, steps=7)
    assert sorted(steps_seen) == expected


def hand_mlp(adapter, x):
    (w1, b1), (w2, b2), (w3, b3) = [(adapter.mlp[i].weight, adapter.mlp[i].bias) for i in (0, 2, 4)]
    return (torch.relu(torch.relu(x @ w1.T + b1) @ w2.T + b2) @ w3.T + b3)[..., 0]


def test_authors_adapter_is_a_plain_mlp_whose_output_is_w():
    torch.manual_seed(0)
    adapter = ScaleAdapter(16, "authors")
    x = torch.rand(3, 2, 16)
    with torch.no_grad():
        torch.testing.assert_close(adapter(x), hand_mlp(adapter, x))
        torch.testing.assert_close(adapter.strength(x), hand_mlp(adapter, x))  # raw, not negated, no softplus
    assert not any("feature" in key for key in adapter.state_dict())        # no standardisation
    ours = ScaleAdapter(16)
    torch.testing.assert_close(ours.strength(x), -torch.nn.functional.softplus(hand_mlp(ours, x)))
    with pytest.raises(erasekit.ErasekitError, match="unknown scale adapter kind"):
        ScaleAdapter(16, "official")


def test_adapter_files_keep_their_kind(tmp_path):
    from safetensors.torch import save_file
    authors = ScaleAdapter(4, "authors")
    save_adapter(authors, tmp_path / "a")
    loaded = load_adapter(tmp_path / "a")
    x = torch.rand(5, 4)
    assert loaded.kind == "authors" and json.loads((tmp_path / "a" / "adapter.json").read_text())["kind"] == "authors"
    torch.testing.assert_close(loaded(x), authors(x))
    assert load_adapter(tmp_path / "a").kind == "authors"
    old = tmp_path / "old"  # written before kinds existed: no metadata
    old.mkdir()
    save_file(ScaleAdapter(4).state_dict(), old / WEIGHTS)
    assert load_adapter(old).kind == "erasekit"


def test_authors_adapter_probes_at_plus_one_and_its_output_is_w(sd1, tmp_path):
    layers = len(erasekit.find_cross_attention(sd1.unet))
    adapter = ScaleAdapter(layers, "authors")
    torch.nn.init.constant_(adapter.mlp[-1].bias, -2.0)
    save_adapter(adapter, tmp_path / "adapter")
    erasekit.erase(sd1, "gie", ["nude"], adapter=str(tmp_path / "adapter")).save(tmp_path / "edit")
    loaded = erasekit.load_edit(tmp_path / "edit")

    def features(edit):
        edit.apply(sd1)
        try:
            erasekit.generate(sd1, [PROMPT], [3], steps=2, progress=False)
            session = active_session(sd1)
            return session.features(), session.row_weights
        finally:
            edit.remove(sd1)
    probed, weights = features(loaded)
    with torch.no_grad():
        torch.testing.assert_close(weights, adapter(probed))
    plus_one = features(erasekit.erase(sd1, "gie", ["nude"], strength=1.0))[0]
    zero = features(erasekit.erase(sd1, "gie", ["nude"], strength=0.0))[0]
    torch.testing.assert_close(probed, plus_one)
    assert not torch.allclose(probed, zero)


def test_authors_fit_regresses_w_and_records_features_at_plus_one(sd1):
    torch.manual_seed(0)
    features = torch.rand(64, 1, 5)
    labels = 8 * features[:, 0, 2]
    adapter, mae = fit(features, labels, AdapterTraining(iterations=1500, kind="authors", margin=1.0))
    assert adapter.kind == "authors" and mae < 0.5
    with torch.no_grad():
        assert (adapter.strength(features[:, 0]) - (-labels)).abs().mean() < 0.5
    nothing = Detector("never", lambda images: torch.zeros(len(images)),
                       verdicts=lambda images: torch.zeros(len(images), dtype=torch.bool))
    cfg = AdapterTraining(grid=(0.0,), seeds=(3,), steps=2, kind="authors")
    recorded = smallest_strengths(sd1, resolve(["nude"]), [PROMPT], nothing, cfg, progress=False)[0]
    edit = erasekit.erase(sd1, "gie", ["nude"], strength=1.0)
    edit.apply(sd1)
    try:
        erasekit.generate(sd1, [PROMPT], [3], steps=2, progress=False, batch_size=2)
        torch.testing.assert_close(recorded, active_session(sd1).features())
    finally:
        edit.remove(sd1)


def test_cli_writes_an_authors_adapter(tiny_dirs, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a photo of a person\n")
    out = tmp_path / "adapter"
    assert main(["gie-adapter", "--model", str(tiny_dirs["sd1"]), "--concept", "nudity", "--prompts", str(prompts),
                 "--grid", "0", "--seeds", "0", "--steps", "2", "--kind", "authors", "--out", str(out)]) == 0
    assert load_adapter(out).kind == "authors"
