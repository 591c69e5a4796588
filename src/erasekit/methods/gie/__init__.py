"""EIUP / GIE — erasing implicit unsafe concepts with growth inhibitors (Chen et al., ICLR 2025), training-free.

The erase target E is appended to the prompt (P' = P + E, E's tokens just before P's EoT, E encoded on its own).
Branch 0 runs the plain prompt P; branch 1 runs P'. In branch 1's cross-attention, for the first 80 % of steps, the
P tokens keep branch 0's attention map and each E token i adds w_i · M*_i · V(c*_i), M* = softmax(Q K(c*)ᵀ/√d);
w < 0 inhibits the concept. For the first 40 % of steps branch 1's low-resolution self-attention maps are branch 0's.

Parity mode runs both branches in every UNet call: a UNet hook appends a branch-0 row (the original context) for
each row that carries the prompt and gives that row branch 1's context, P' up to the order of its rows, made from
the context alone (`splice`); the processors pair each branch-1 row with its branch-0 row (`session`). Copying
branch 0's map for the P tokens makes branch 1's P part equal branch 0's output, so branch 1 = branch 0 +
Σ_i w_i M*_i V(c*_i). Branch 0 is evaluated on branch 1's latents (one extra row per image, no second trajectory).
Fast mode (this project's design) drops branch 0: the P part is the row's own attention over Enc(P), so the cost
is one extra K/V projection of Enc(E) per layer. Both modes work in any plain pipeline call: text-to-image,
image-to-image, SDXL, prompt embeddings from attacks.

w is either fixed (EIUP v1; `strength`) or predicted per image and E token by the scale adapter from the token's
mean attention in each cross-attention layer at the first step (one extra UNet pass; see `adapter_training`).

The official code differs in its prompt rows, its step windows and its scale adapter; each is an option
(`parity_rows`, `parity_schedule`, the adapter's kind), described with the reasons in `parity`.

erasekit's defaults differ from the paper's in two measured ways (ShapeWorld, `bench.gie_sweep`; the paper's
behaviour is `inhibitor="additive", cross_fraction=0.8`):
- the step window covers every step (`cross_fraction=1.0`, the paper 0.8): the v-prediction ShapeWorld draws the
  shape in its last steps — replacing every cross-attention output by another prompt's for the first 80 % of the
  steps changes colours and keeps the shape, for the last 20 % alone it changes the shape — so the paper's window
  never reaches the steps where the concept forms;
- the projection inhibitor (`processor`): M* is not selective in this model (the same mass for every shape), and
  the paper's additive term recolours instead of erasing at any |w|. It spares half of the span of the spec's
  `keep` words (`keep_share`; ShapeWorld's style presets keep the shapes): a style's direction lies partly along
  its subjects', and pushing past it otherwise lost the shape in 6/80 images.

    edit = erasekit.erase(pipe, "gie", ["nude"], strength=-1.5)
    edit.apply(pipe); images = erasekit.generate(pipe, ["a photo of a person on the beach"], seeds=[0])
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from ...edits import SamplingTimeEdit
from ...errors import ErasekitError
from ...models.fingerprint import fingerprint
from ..registry import register_method
from .parity import active_steps, joint_contexts, read_through
from .processor import INHIBITORS, GIEAttention
from .scale import ScaleAdapter, load_adapter, save_adapter, shipped_adapter
from .session import GIESession
from .splice import encode_keep, encode_target, splice, splice_many

__all__ = ["GIEAttention", "GIEConfig", "GIESession", "ScaleAdapter", "active_steps", "encode_target", "erase_gie",
           "joint_contexts", "load_adapter", "read_through", "save_adapter", "shipped_adapter", "splice",
           "splice_many"]


@dataclass
class GIEConfig:
    strength: float = -2.0          # w: fixed value (EIUP v1; the paper −1); negative suppresses. At 16 seeds
                                    # (100+), half the shapes' span spared: −1.75 left tobias renn in 2/160
                                    # explicit and implicit images, −2 in 0/160, every shape and colour kept
    inhibitor: str = "projection"   # "projection" (erasekit; see above) or "additive" (the paper's w·M*·V(c*))
    cross_fraction: float = 1.0     # share of steps with the copied map and the injected term (the paper: 0.8)
    self_fraction: float = 0.4      # share of steps with branch 0's low-resolution self-attention maps
    fast: bool = False              # one branch (this project's fast mode) instead of two (parity)
    low_resolution_divisor: int = 4  # self-attention at ≤ sample_size / divisor per side counts as low resolution
    target: str = ""                # E; empty: the concept's targets joined by ", "
    adapter: str = ""               # scale adapter folder (`erasekit gie-adapter`), or "shipped" for ShapeWorld's
                                    # adapter of this concept; empty: the fixed `strength`
    keep_share: float = 0.5         # share of the spec's `keep` words' span (a style's subjects) the projection
                                    # inhibitor leaves alone (`processor.spare`); 0: none. Without it −1.75 lost
                                    # the shape in 6/80 tobias renn images, all of it left the style in 34/80
    parity_rows: bool = False       # the official code's rows and map copy from P's joint encoding with E
    parity_schedule: bool = False   # the official code's int() step windows (see parity)


@register_method("gie", GIEConfig, "EIUP/GIE growth inhibitors: training-free, at sampling time")
def erase_gie(pipe, spec, config: GIEConfig) -> SamplingTimeEdit:
    target = config.target or ", ".join(spec.targets)
    encode_target(pipe, target)  # refuses a target that tokenises to nothing before anything is written
    if config.inhibitor not in INHIBITORS:
        raise ErasekitError(f"unknown GIE inhibitor {config.inhibitor!r}; inhibitors: {', '.join(INHIBITORS)}")
    if not 0 < config.cross_fraction <= 1 or not 0 <= config.self_fraction <= 1:
        raise ErasekitError(f"GIE's step windows are shares of the steps: cross_fraction in (0, 1], self_fraction "
                            f"in [0, 1] (got {config.cross_fraction}, {config.self_fraction})")
    if not 0 <= config.keep_share <= 1:
        raise ErasekitError(f"keep_share is a share of the keep words' span, in [0, 1] (got {config.keep_share})")
    encode_keep(pipe, spec.keep)  # refuses a keep word that tokenises to nothing
    if config.parity_rows and config.fast:
        raise ErasekitError("parity_rows reads branch 0's maps: it needs parity mode (fast=false)")
    tensors, extra = {}, {}
    if config.adapter:
        adapter = load_adapter(shipped_adapter(spec) if config.adapter == "shipped" else config.adapter)
        tensors, extra = adapter.to_tensors(), {"adapter_kind": adapter.kind}
    return SamplingTimeEdit(tensors, method="gie", concepts=spec.targets, fingerprint=fingerprint(pipe, []),
                            config={"session": "gie", **asdict(config), **extra, "target": target,
                                    "spec": spec.to_dict()})
