"""ForceForget's Concept Erasing Reward, pluggable: r = (λ_safe · r_safe + λ_align · r_align) / (λ_safe + λ_align)
for target prompts and r = r_align for benign ones, every part in [0, 1] (the paper: CER = λ1 r_safe + λ2 r_align,
each scaled to [0, 1]; its λs are not given — equal weights are erasekit's assumption, and the division keeps r in
[0, 1]).

- `ShapeWorldReward`: r_safe = 1 − the classifier's probability of the target, read at a temperature (logits / T,
  `safe_temperature`, default 5 — reconstruction: the shipped classifier is trained to 100 % accuracy and its
  probabilities saturate, 1 − p < 1e-4 on every sampled triangle, which leaves the policy nothing to climb; at T = 5
  they spread over 0.1–0.5 while the verdict, the most probable class, is the same); or (`safe_form="margin"`)
  σ((strongest rival's logit − the target's) / T), which only a rival closing in on the target raises — the
  verdict's own measure (measured: the probability form rose 0.19 → 0.66 with the triangle still detected in every
  image at lam_keep 0.1); r_align = the share of the prompt's other stated attributes (colour, background,
  texture, shape) the classifier sees (1 when it states none), or (`align_form="margin"`, reconstruction) their
  mean σ((the stated value's logit − its strongest rival's) / T): graded, so that samples of a benign prompt
  which all still show its content differ in reward before any of them loses it (with the verdict they score
  alike, their per-prompt advantages are 0, and nothing holds them while the target's reward moves the model;
  measured at the bench's budget, it did not stop the model breaking: README, ForceForget). With an `anchor`
  (`align_anchor`, reconstruction of the paper's CLIP(x, anchor text) term: the spec's anchor, e.g. the
  triangle's diamond) a target prompt's r_align is the mean of that and whether the anchor is seen (its verdict,
  or σ((its logit − the strongest rival's) / T)): the policy is then rewarded for drawing something, not only
  for not drawing the target.
- `DetectorClipReward` (real models): r_safe = 1 − a detector's probability (NudeNet by default, or any
  `Detector` / callable images → probabilities); r_align = the mean of CLIP(x, the prompt with its unsafe words
  removed) and CLIP(x, an anchor text, "a person wearing clothes"), each CLIP score / 100 (torchmetrics' scale,
  so in [0, 1]), with a CLIP model from a folder or hub id the user gives.

A reward is a callable (images, prompts: list[PoolPrompt]) → (rewards, parts) with `parts` the mean r_safe and
r_align for the log."""
from __future__ import annotations

import torch

from ...detectors import DetectorUnavailable
from ...detectors.shapeworld import shipped_classifier
from ...errors import ErasekitError
from ...shapeworld.domain import LABELS, find_concept
from ...utils.images import to_unit
from .pool import PoolPrompt, remove_words

NUDITY_WORDS = ("nude", "nudity", "naked", "nsfw", "sexual", "sex", "erotic", "porn", "pornographic", "topless",
                "bottomless", "undressed", "explicit", "breasts", "genitals")


def combine(harmful: torch.Tensor, safe: torch.Tensor, align: torch.Tensor, lam_safe: float, lam_align: float
            ) -> tuple[torch.Tensor, dict]:
    reward = torch.where(harmful, (lam_safe * safe + lam_align * align) / (lam_safe + lam_align), align)
    parts = {"r_safe": float(safe[harmful].mean()) if harmful.any() else None, "r_align": float(align.mean())}
    return reward, parts


class ShapeWorldReward:
    def __init__(self, target: str, lam_safe: float = 1.0, lam_align: float = 1.0, classifier=None,
                 temperature: float = 5.0, safe_form: str = "probability", align_form: str = "verdict",
                 anchor: str | None = None):
        if not temperature > 0:
            raise ErasekitError(f"safe_temperature must be > 0, not {temperature}")
        check_safe_form(safe_form)
        check_align_form(align_form)
        self.attribute, value = find_concept(target)
        self.index = LABELS[self.attribute].index(value.name)
        self.lam_safe, self.lam_align, self.temperature, self.safe_form = lam_safe, lam_align, temperature, safe_form
        self.align_form = align_form
        self.anchor = None  # the anchor's class index in the target's attribute (the paper's anchor-text term)
        if anchor:
            anchor_attribute, anchor_value = find_concept(anchor)
            if anchor_attribute != self.attribute:
                raise ErasekitError(f"the anchor {anchor!r} is a {anchor_attribute}, the target a {self.attribute}")
            self.anchor = LABELS[self.attribute].index(anchor_value.name)
        self.classifier = classifier or shipped_classifier()

    def __call__(self, images, prompts: list[PoolPrompt]) -> tuple[torch.Tensor, dict]:
        with torch.no_grad():  # one pass: r_safe reads the target's logits, r_align the other heads' verdicts
            logits = self.classifier.eval()(to_unit(images))
        safe = safe_score(logits[self.attribute].double(), self.index, self.temperature, self.safe_form)
        seen = self._seen if self.align_form == "verdict" else self._margin
        align = torch.tensor([seen(logits, i, p.stated) if p.stated else 1.0 for i, p in enumerate(prompts)],
                             dtype=torch.float64)  # a prompt that states nothing else is aligned
        harmful = torch.tensor([p.harmful for p in prompts])
        if self.anchor is not None:  # a target prompt's r_align: its stated content and the anchor, half each
            shown = self._anchor_shown(logits[self.attribute].double())
            align = torch.where(harmful, (align + shown) / 2, align)
        return combine(harmful, safe, align, self.lam_safe, self.lam_align)

    def _anchor_shown(self, logits: torch.Tensor) -> torch.Tensor:
        if self.align_form == "verdict":
            return (logits.argmax(-1) == self.anchor).double()
        return 1 - safe_score(logits, self.anchor, self.temperature, "margin")

    @staticmethod
    def _seen(logits: dict, i: int, stated: dict) -> float:
        return sum(LABELS[a][int(logits[a][i].argmax())] == v for a, v in stated.items()) / len(stated)

    def _margin(self, logits: dict, i: int, stated: dict) -> float:
        return sum(float(1 - safe_score(logits[a][i:i + 1].double(), LABELS[a].index(v), self.temperature, "margin"))
                   for a, v in stated.items()) / len(stated)


SAFE_FORMS = ("probability", "margin")
ALIGN_FORMS = ("verdict", "margin")


def check_safe_form(form: str) -> None:
    if form not in SAFE_FORMS:
        raise ErasekitError(f"safe_form must be one of {', '.join(SAFE_FORMS)}, not {form!r}")


def check_align_form(form: str) -> None:
    if form not in ALIGN_FORMS:
        raise ErasekitError(f"align_form must be one of {', '.join(ALIGN_FORMS)}, not {form!r}")


def safe_score(logits: torch.Tensor, index: int, temperature: float, form: str) -> torch.Tensor:
    """r_safe from a classifier head's logits: 1 − p(target) at logits / T ("probability"), or σ((max other logit −
    target logit) / T) ("margin": only the strongest rival counts, so raising the other classes' logits without
    overtaking the target — which leaves the verdict as it was — earns nothing)."""
    if form == "probability":
        return 1 - (logits / temperature).softmax(-1)[:, index]
    others = torch.cat([logits[:, :index], logits[:, index + 1:]], dim=1)
    return ((others.max(dim=1).values - logits[:, index]) / temperature).sigmoid()


class DetectorClipReward:
    def __init__(self, detector, clip_model: str, unsafe_words=NUDITY_WORDS,
                 anchor_text: str = "a person wearing clothes", lam_safe: float = 1.0, lam_align: float = 1.0):
        if not clip_model:
            raise ErasekitError("ForceForget's alignment reward needs a CLIP model: give clip_model= (a folder with "
                                "a transformers CLIPModel, or a hub id)")
        from ...detectors import CLIPScorer
        try:
            self.clip = CLIPScorer(clip_model)
        except DetectorUnavailable as e:
            raise ErasekitError(f"ForceForget's alignment reward: {e}") from None
        self.probabilities = getattr(detector, "probabilities", detector)
        self.unsafe_words, self.anchor_text = tuple(unsafe_words), anchor_text
        self.lam_safe, self.lam_align = lam_safe, lam_align

    def __call__(self, images, prompts: list[PoolPrompt]) -> tuple[torch.Tensor, dict]:
        safe = 1 - torch.as_tensor(self.probabilities(images), dtype=torch.float64)
        filtered = [remove_words(p.text, self.unsafe_words) or self.anchor_text for p in prompts]
        align = (self.clip(images, filtered).double() + self.clip(images, [self.anchor_text] * len(prompts)).double())
        harmful = torch.tensor([p.harmful for p in prompts])
        return combine(harmful, safe, (align / 200).clamp(0, 1), self.lam_safe, self.lam_align)


def make_reward(config, spec):
    """The reward a config asks for: "shapeworld" for a ShapeWorld concept (the default there), else NudeNet
    (or `config.detector`) with CLIP."""
    kind = config.reward
    if callable(kind):  # any reward object: (images, prompts) -> (rewards in [0, 1], parts)
        return kind
    if kind == "auto":
        try:
            find_concept(spec.targets[0])
            kind = "shapeworld"
        except KeyError:
            kind = "detector-clip"
    if kind == "shapeworld":
        anchor = spec.anchors[0] if config.align_anchor and spec.anchors and spec.anchors[0].strip() else None
        return ShapeWorldReward(spec.targets[0], config.lam_safe, config.lam_align,
                                temperature=config.safe_temperature, safe_form=config.safe_form,
                                align_form=config.align_form, anchor=anchor)
    if kind != "detector-clip":
        raise ErasekitError(f"unknown reward {kind!r}; use auto, shapeworld or detector-clip")
    from ...detectors import nudenet_detector
    detector = config.detector if callable(config.detector) else _named_detector(config.detector, nudenet_detector)
    return DetectorClipReward(detector, config.clip_model, config.unsafe_words or NUDITY_WORDS, config.anchor_text,
                              config.lam_safe, config.lam_align)


def _named_detector(name: str, nudenet_detector):
    if name != "nudenet":
        raise ErasekitError(f"unknown detector {name!r}: give 'nudenet' or pass a detector callable")
    try:
        return nudenet_detector(0.45)
    except DetectorUnavailable as e:
        raise ErasekitError(f"ForceForget's safety reward: {e}") from None
