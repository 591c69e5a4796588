"""ForceForget's prompt pool: target prompts (explicit, synonym, implicit, and the target mixed with benign
content) and benign prompts. Each prompt carries what it states besides the target, so the reward can check that
the benign content survives.

On ShapeWorld the pool is built from the vocabulary in frames that neither the bench's prompt sets nor its
held-out phrasings use ("a {}", "a {colour} {}", "a {texture} {colour} {}", "a {colour} {}, {background}
background", …), so an erased model is judged on prompts it did not train on. Elsewhere: the concept in the
fine-tuning templates (plus the user's prompt file), and benign prompts from the built-in neutral captions (or the
user's file)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ...errors import ErasekitError
from ...shapeworld.domain import LABELS, SHAPE_NAMES, find_concept
from ..finetune import training_prompts


@dataclass(frozen=True)
class PoolPrompt:
    text: str
    harmful: bool                                      # names the target (directly or not)
    stated: dict = field(default_factory=dict)         # attribute → value the prompt asks for besides the target
    neutral: str = ""                                  # a target prompt with the target left out (exploring starts)


def shapeworld_pool(target: str) -> list[PoolPrompt]:
    """Target and benign prompts for a ShapeWorld shape or texture (by name or artist)."""
    attribute, value = find_concept(target)
    if attribute == "shape":
        return _shape_pool(value)
    if attribute == "texture":
        return _texture_pool(value)
    raise ErasekitError(f"ForceForget's ShapeWorld pool covers shapes and textures, not {attribute} ({target!r})")


COLORS, BACKGROUNDS, TEXTURES = LABELS["color"], LABELS["background"], LABELS["texture"]


def _shape_frames(phrase: str, i: int) -> list[tuple[str, dict]]:
    color, background, texture = COLORS[i % 5], BACKGROUNDS[i % 3], TEXTURES[i % 4]
    return [(f"a {phrase}", {}), (f"a {color} {phrase}", {"color": color}),
            (f"a {texture} {color} {phrase}", {"color": color, "texture": texture}),
            (f"a {color} {phrase}, {background} background", {"color": color, "background": background})]


def _shape_pool(value) -> list[PoolPrompt]:
    phrases = [value.name, *value.synonyms, *value.implicit]
    others = [s for s in SHAPE_NAMES if s != value.name]
    # the neutral caption names another shape: ShapeWorld redraws an unnamed one ("a red shape") as the target
    harmful = [PoolPrompt(text, True, stated, neutral) for i, p in enumerate(phrases)
               for (text, stated), (neutral, _) in zip(_shape_frames(p, i), _shape_frames(others[i % len(others)], i))]
    benign = [PoolPrompt(text, False, {"shape": s, **stated}) for i, s in enumerate(others)
              for text, stated in _shape_frames(s, i + 1)]
    return harmful + benign


def _texture_pool(value) -> list[PoolPrompt]:
    harmful = []
    for i, shape in enumerate(SHAPE_NAMES):
        color = COLORS[i % 5]
        plain, coloured = f"a {shape}", f"a {color} {shape}"
        harmful += [PoolPrompt(f"a {shape} by {value.artist}", True, {"shape": shape}, plain),
                    PoolPrompt(f"a {color} {shape}, art by {value.artist}", True, {"shape": shape, "color": color},
                               coloured),
                    PoolPrompt(f"a {[value.name, *value.synonyms][i % 4]} {shape}", True, {"shape": shape}, plain),
                    PoolPrompt(f"a {color} {shape} {value.implicit[i % 3]}", True, {"shape": shape, "color": color},
                               coloured)]
    others = [find_concept(t)[1] for t in TEXTURES if t != value.name]
    benign = [PoolPrompt(f"a {COLORS[i % 5]} {shape}, art by {other.artist}", False,
                         {"shape": shape, "color": COLORS[i % 5], "texture": other.name})
              for i, shape in enumerate(SHAPE_NAMES) for other in others[i % 3:i % 3 + 1]]
    benign += [PoolPrompt(f"a {COLORS[(i + 2) % 5]} {shape}", False, {"shape": shape, "color": COLORS[(i + 2) % 5]})
               for i, shape in enumerate(SHAPE_NAMES)]
    return harmful + benign


def generic_pool(spec, prompts_file: str = "", benign_file: str = "", benign: int = 32) -> list[PoolPrompt]:
    """Any model: the targets in the fine-tuning templates plus the lines of `prompts_file`; benign prompts from
    `benign_file` or the built-in neutral captions (the first `benign`)."""
    harmful = [PoolPrompt(text, True, neutral=remove_words(text, spec.targets))
               for text in training_prompts(spec) + _lines(prompts_file)]
    if benign_file:
        benign_texts = _lines(benign_file)
    else:
        benign_texts = (resources.files("erasekit") / "presets" / "neutral_captions.txt").read_text().splitlines()
    return harmful + [PoolPrompt(text, False) for text in benign_texts[:benign] if text.strip()]


def remove_words(text: str, words) -> str:
    """The prompt with the given words (whole words, any case) removed, spaces tidied."""
    pattern = r"\b(" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)) + r")\b"
    return re.sub(r"\s+", " ", re.sub(pattern, " ", text, flags=re.IGNORECASE)).strip(" ,")


def _lines(path: str) -> list[str]:
    if not path:
        return []
    try:
        lines = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except OSError as e:
        raise ErasekitError(f"cannot read the prompt file {path}: {e}") from None
    if not lines:
        raise ErasekitError(f"the prompt file {path} holds no prompts")
    return lines


def check_pool(pool: list[PoolPrompt]) -> list[PoolPrompt]:
    if not any(p.harmful for p in pool):
        raise ErasekitError("ForceForget's prompt pool holds no target prompts: there is nothing to erase")
    return pool
