"""Edit: the result of every erasure method, saved as JSON + safetensors, applied to and removed from a pipeline.

Kinds: `weight_delta` (a change to UNet weights, full or low-rank), `sampling_time` (a method that acts while
sampling, through attention processors and/or UNet hooks) and `adapter` (extra trainable modules). Each kind is a
subclass registered by name, so `load_edit` can rebuild any saved Edit. What an applied edit changed is kept on the
UNet it changed (`state.py`).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import ClassVar

import torch
from safetensors.torch import load_file, save_file

from ..errors import EditError
from ..models.fingerprint import architecture_hash
from ..utils.files import atomic_dir
from ..version import __version__
from .state import applied_edits

FORMAT_VERSION = 1
METADATA_FILE, TENSORS_FILE = "edit.json", "tensors.safetensors"
EDIT_KINDS: dict[str, type["Edit"]] = {}
KIND_ALIASES = {"attention_processor": "sampling_time"}  # the kind's name in files written by erasekit < 0.2


def register_edit_kind(cls: type["Edit"]) -> type["Edit"]:
    EDIT_KINDS[cls.kind] = cls
    return cls


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Edit:
    """Base class. `metadata` holds method, concepts, config, protocol and the base model's fingerprint."""
    kind: ClassVar[str] = "abstract"

    def __init__(self, tensors: dict[str, torch.Tensor] | None = None, *, method: str, concepts: list[str],
                 config: dict | None = None, protocol: dict | None = None, fingerprint: dict | None = None):
        self.tensors = dict(tensors or {})
        self.metadata = {"method": method, "concepts": list(concepts), "config": dict(config or {}),
                         "protocol": dict(protocol or {}), "fingerprint": dict(fingerprint or {})}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(method={self.method!r}, concepts={self.concepts!r})"

    @property
    def method(self) -> str:
        return self.metadata["method"]

    @property
    def concepts(self) -> list[str]:
        return self.metadata["concepts"]

    @classmethod
    def from_record(cls, record: dict, tensors: dict[str, torch.Tensor]) -> "Edit":
        return cls(tensors, method=record["method"], concepts=record["concepts"], config=record["config"],
                   protocol=record["protocol"], fingerprint=record["fingerprint"])

    # Applying and removing; subclasses implement _apply/_remove.
    def apply(self, pipe):
        stack = applied_edits(pipe)
        if any(e is self for e in stack):
            raise EditError(f"{self} is already applied to this pipeline")
        self._check_fits(pipe)
        self._apply(pipe)
        stack.append(self)
        return pipe

    def remove(self, pipe):
        stack = applied_edits(pipe)
        if not any(e is self for e in stack):
            raise EditError(f"{self} is not applied to this pipeline")
        stack[:] = [e for e in stack if e is not self]
        self._remove(pipe)
        return pipe

    def _check_fits(self, pipe) -> None:
        expected = self.metadata["fingerprint"].get("architecture")
        if expected and expected != architecture_hash(pipe):
            raise EditError(f"{self} was made for another model architecture "
                            f"({self.metadata['fingerprint'].get('family')}, {expected}); this pipeline is "
                            f"{getattr(pipe, 'erasekit_family', 'unknown')}, {architecture_hash(pipe)}")

    def _apply(self, pipe) -> None:
        raise NotImplementedError

    def _remove(self, pipe) -> None:
        raise NotImplementedError

    def export_lora(self, path: str | Path, max_rank: int | None = None, tol: float = 1e-7) -> dict:
        """Write a LoRA file for `pipe.load_lora_weights(path)` (weight-delta edits override this)."""
        raise EditError(f"{self} is a {self.kind} edit: only weight-delta edits can be exported as LoRA")

    # Saving and loading.
    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write `path/edit.json` and `path/tensors.safetensors` atomically: a crash leaves no partial folder."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise EditError(f"{path} already exists; choose another folder or pass overwrite=True")
        with atomic_dir(path) as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in self.tensors.items()}, tmp / TENSORS_FILE)
            record = {"format_version": FORMAT_VERSION, "kind": self.kind, **self.metadata,
                      "tensors_sha256": _sha256(tmp / TENSORS_FILE), "erasekit_version": __version__}
            (tmp / METADATA_FILE).write_text(json.dumps(record, indent=2, default=str))
        return path


def load_edit(path: str | Path) -> Edit:
    """Load an Edit saved with `Edit.save`, checking that its files are complete and unaltered."""
    path = Path(path)
    if not (path / METADATA_FILE).is_file():
        raise EditError(f"{path} is not an erasekit edit folder (no {METADATA_FILE})")
    try:
        record = json.loads((path / METADATA_FILE).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise EditError(f"{path / METADATA_FILE} is corrupted: {e}") from None
    if record.get("format_version") != FORMAT_VERSION:
        raise EditError(f"{path}: unsupported edit format {record.get('format_version')!r}")
    cls = EDIT_KINDS.get(KIND_ALIASES.get(record.get("kind"), record.get("kind")))
    if cls is None:
        raise EditError(f"{path}: edit kind {record.get('kind')!r} is not available in this erasekit")
    tensors_path = path / TENSORS_FILE
    if not tensors_path.is_file() or _sha256(tensors_path) != record.get("tensors_sha256"):
        raise EditError(f"{tensors_path} is missing, truncated or corrupted (its checksum does not match)")
    try:
        tensors = load_file(tensors_path)
    except Exception as e:
        raise EditError(f"{tensors_path} cannot be read: {e}") from None
    return cls.from_record(record, tensors)
