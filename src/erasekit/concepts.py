"""What to erase: target concepts, what they become (anchor), what must stay (preserve), what the concept's prompts
draw beside it (keep), prompt templates.

A spec comes from arguments, a preset (`nudity`, `unsafe`, `artists`, `objects`, `shapeworld/<concept>`) or a
YAML/JSON file a user writes with the same keys."""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import ErasekitError

PRESETS_FILE = Path(__file__).resolve().parent / "presets" / "concepts.yaml"
SHAPEWORLD_PREFIX = "shapeworld/"
# ShapeWorld's unconditional model draws any given shape about 1 time in 6, so an empty anchor would leave the
# target there that often; presets replace a concept by a fixed other one instead (pass anchor="" to override).
SHAPEWORLD_ANCHORS = {
    "circle": "square", "square": "circle", "triangle": "diamond", "diamond": "triangle", "cross": "star",
    "star": "cross", "red": "blue", "blue": "red", "green": "purple", "purple": "green", "yellow": "red",
    "solid": "striped", "striped": "plain", "dotted": "plain", "checkered": "plain",
}


KINDS = ("nudity", "unsafe", "style", "object")


class ConceptError(ErasekitError):
    pass


@dataclass
class ConceptSpec:
    targets: list[str]
    anchors: list[str]                  # one per target; "" = unconditional
    preserve: list[str] = field(default_factory=list)
    templates: list[str] = field(default_factory=lambda: ["{}"])
    pairs: dict | None = None           # TRCE: {"malicious": [...], "safe": "..."} (optional)
    name: str = ""
    kind: str = "object"                # nudity | unsafe | style | object: selects methods' per-kind defaults
    keep: list[str] = field(default_factory=list)  # what the concept's prompts draw beside it (a style's subjects):
                                        # sampling-time erasers (GIE) spare part of their directions

    def __post_init__(self):
        if not self.targets or not all(isinstance(t, str) and t.strip() for t in self.targets):
            raise ConceptError("a concept spec needs at least one non-empty target concept")
        if len(self.anchors) == 1 and len(self.targets) > 1:
            self.anchors = self.anchors * len(self.targets)
        if len(self.anchors) != len(self.targets):
            raise ConceptError(f"{len(self.targets)} targets but {len(self.anchors)} anchors")
        if not all("{}" in t for t in self.templates):
            raise ConceptError("every prompt template needs a '{}' where the concept goes")
        if self.kind not in KINDS:
            raise ConceptError(f"concept kind {self.kind!r} is not one of {', '.join(KINDS)}")

    def to_dict(self) -> dict:
        return {"name": self.name, "targets": self.targets, "anchors": self.anchors, "preserve": self.preserve,
                "templates": self.templates, "pairs": self.pairs, "kind": self.kind, "keep": self.keep}


def _from_mapping(data: dict, name: str) -> ConceptSpec:
    unknown = set(data) - {"targets", "anchor", "anchors", "preserve", "templates", "pairs", "name", "kind", "keep"}
    if unknown:
        raise ConceptError(f"{name}: unknown keys {sorted(unknown)}")
    targets = data.get("targets") or []
    targets = [targets] if isinstance(targets, str) else list(targets)
    anchors = data.get("anchors", data.get("anchor", ""))
    anchors = [anchors] if isinstance(anchors, str) else list(anchors)
    return ConceptSpec(targets, anchors, list(data.get("preserve") or []), list(data.get("templates") or ["{}"]),
                       data.get("pairs"), data.get("name", name), data.get("kind", "object"),
                       list(data.get("keep") or []))


def shapeworld_preset(concept: str) -> ConceptSpec:
    from .shapeworld.domain import ATTRIBUTES, SHAPE_NAMES, find_concept
    try:
        attribute, value = find_concept(concept)
    except KeyError:
        raise ConceptError(f"unknown ShapeWorld concept {concept!r}") from None
    others = [v for v in ATTRIBUTES[attribute] if v.name != value.name]
    kind = "style" if attribute == "texture" else "object"
    keep = list(SHAPE_NAMES) if kind == "style" else []  # a texture's prompts draw it on a shape, which must stay
    if concept == value.artist:  # an artist's style: preserve the other artists, as artist erasure does
        anchor = SHAPEWORLD_ANCHORS[value.name]
        return ConceptSpec([concept], [anchor], [v.artist for v in others], name=SHAPEWORLD_PREFIX + concept,
                           kind="style", keep=keep)
    return ConceptSpec([concept], [SHAPEWORLD_ANCHORS[value.name]], [v.name for v in others],
                       name=SHAPEWORLD_PREFIX + concept, kind=kind, keep=keep)


def preset_names() -> list[str]:
    from .shapeworld.domain import ATTRIBUTES
    names = list(yaml.safe_load(PRESETS_FILE.read_text()))
    for attribute in ("shape", "texture", "color"):
        for v in ATTRIBUTES[attribute]:
            names += [SHAPEWORLD_PREFIX + v.name] + ([SHAPEWORLD_PREFIX + v.artist] if v.artist else [])
    return names


def preset(name: str) -> ConceptSpec:
    if name.startswith(SHAPEWORLD_PREFIX):
        return shapeworld_preset(name[len(SHAPEWORLD_PREFIX):])
    presets = yaml.safe_load(PRESETS_FILE.read_text())
    if name not in presets:
        raise ConceptError(f"unknown concept preset {name!r}; known: {', '.join(preset_names())}")
    return _from_mapping(presets[name], name)


def from_file(path: str | Path) -> ConceptSpec:
    path = Path(path)
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise ConceptError(f"cannot read concept spec {path}: {e}") from None
    if not isinstance(data, dict):
        raise ConceptError(f"{path}: a concept spec is a mapping with 'targets', 'anchor', 'preserve'")
    return _from_mapping(data, path.stem)


def resolve(concepts: list[str] | str | ConceptSpec | None = None, *, anchor: str | list[str] | None = None,
            preserve: list[str] | None = None, preset_name: str | None = None, spec_file: str | None = None,
            templates: list[str] | None = None, keep: list[str] | None = None) -> ConceptSpec:
    """One new spec from whatever the caller gave (a spec passed in is copied, never changed); explicit
    anchor/preserve/templates/keep override a preset's."""
    if isinstance(concepts, ConceptSpec):
        spec = copy.deepcopy(concepts)
    elif spec_file:
        spec = from_file(spec_file)
    elif preset_name:
        spec = preset(preset_name)
    else:
        concepts = [concepts] if isinstance(concepts, str) else list(concepts or [])
        if len(concepts) == 1 and (concepts[0].startswith(SHAPEWORLD_PREFIX) or concepts[0] in _yaml_names()):
            spec = preset(concepts[0])
        else:
            spec = ConceptSpec(concepts, [""] if anchor is None else [anchor] if isinstance(anchor, str) else
                               list(anchor))
    if anchor is not None:
        spec.anchors = [anchor] * len(spec.targets) if isinstance(anchor, str) else list(anchor)
    if preserve is not None:
        spec.preserve = list(preserve)
    if templates:
        spec.templates = list(templates)
    if keep is not None:
        spec.keep = list(keep)
    spec.__post_init__()
    return spec


def _yaml_names() -> set[str]:
    return set(yaml.safe_load(PRESETS_FILE.read_text()))
