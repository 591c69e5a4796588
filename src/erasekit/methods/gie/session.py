"""GIE's session: the shared state of its processors while the edit is applied, and, in parity mode, the UNet
hooks that run branch 0 beside branch 1 in every UNet call.

Parity mode, as SLD's safety rows do: the forward pre-hook appends one branch-0 row for each row that carries the
prompt (all rows without classifier-free guidance, the cond half with it) — the same latents, timestep and
conditioning, with the original context — and gives the original rows, whose output the pipeline keeps, branch 1's
context (`splice.tail_splice`); the post-hook drops the appended rows. The processors pair each branch-1 row with
its branch-0 row (`pairs`). Nothing else changes hands, so parity mode works in any pipeline call: text-to-image,
image-to-image, SDXL, prompt embeddings from attacks. Branch 0 is evaluated on branch 1's latents at every step (it
has no trajectory of its own), which is what costs one extra row per image, not a second generation.

The prompt's text is needed only to refuse a prompt that leaves no room for E and for `parity_rows`; a forward hook
on the text encoder (`PromptRecorder`) tells which token ids a context row was encoded from, when the pipeline
encoded it in this call."""
from __future__ import annotations

from collections import deque

import torch

from ...edits import SamplingSession, register_session
from ...errors import EditError, ErasekitError
from ...models import encode
from ...models.layers import find_cross_attention, in_execution_order
from ...models.text import first_eot_index
from .parity import active_steps, joint_contexts
from .processor import GIEAttention
from .scale import ScaleAdapter
from .splice import check_fit, encode_keep, encode_target, tail_mask, tail_splice

UNET_INPUTS = ("sample", "timestep", "encoder_hidden_states")


@register_session("gie")
class GIESession(SamplingSession):
    """Shared state of the GIE processors: step, branch layout, Enc(E), per-image per-token strengths."""

    def __init__(self, edit, pipe):
        super().__init__(edit, pipe)
        self.fast = bool(self.config["fast"])
        self.layers = "cross" if self.fast else "all"
        self.target = self.config["target"]
        self.order = [layer.name for layer in in_execution_order(find_cross_attention(pipe.unet))]
        self.adapter = ScaleAdapter.from_tensors(edit.tensors, kind=self.config.get("adapter_kind", "erasekit")) \
            if self.config.get("adapter") else None
        self.step, self.total_steps = 0, 1
        self.pairs: list[tuple[int, int | None]] = []  # (branch-1 row, its branch-0 row or None) in the UNet batch
        self.added = 0  # branch-0 rows appended to the running UNet call (dropped from its output)
        self.official: tuple[torch.Tensor, torch.Tensor] | None = None  # parity_rows: (contexts, alignments)
        self.reads: torch.Tensor | None = None  # parity_rows: (pairs, L) alignment of P' to P (`parity`)
        self.row_weights: torch.Tensor | None = None  # (pairs, E tokens) from the adapter
        self.recorded: dict[str, torch.Tensor] = {}   # layer → (pairs, E tokens) adapter features, first step
        self.probing = False
        self.recording = False  # during the first UNet pass of a run (the probe pass when there is an adapter)
        self.prompts: PromptRecorder | None = None

    def check(self) -> None:
        c_star, n = encode_target(self.pipe, self.target)
        self.c_star = c_star[None].to(self.pipe.unet.device)
        self.columns = list(range(1, n + 1))
        self.inhibitor = self.config.get("inhibitor", "additive")  # files written before the option: the paper's
        if self.inhibitor == "projection":
            self.c_null = encode(self.pipe, [""], warn=False).embeddings[:1].to(self.pipe.unet.device)
        self.keep_share = float(self.config.get("keep_share", 0.0))  # files written before the option: none
        spares = self.keep_share and self.inhibitor == "projection"  # the additive term has no keep span
        words = (self.config.get("spec", {}).get("keep") or []) if spares else []
        rows, self.keep_positions = encode_keep(self.pipe, words)
        self.c_keep = rows[None].to(self.pipe.unet.device) if words else None
        if self.adapter is not None and self.adapter.layers != len(self.order):
            raise EditError(f"{self.edit}: its scale adapter was trained for {self.adapter.layers} cross-attention "
                            f"layers but this UNet has {len(self.order)}")

    def targets(self) -> dict[str, object]:
        """Cross-attention, and in parity mode the low-resolution self-attention; the rest keep their processors."""
        return {name: module for name, module in super().targets().items()
                if getattr(module, "is_cross_attention", False)
                or (not self.fast and self._low_resolution(name))}

    def _low_resolution(self, name: str) -> bool:
        unet = self.pipe.unet
        return _resolution(unet, name) <= unet.config.sample_size // self.config["low_resolution_divisor"]

    def processor(self, name: str, module):
        return GIEAttention(self, name, cross=bool(getattr(module, "is_cross_attention", False)))

    def attach(self) -> None:
        super().attach()
        if not self.fast and getattr(self.pipe, "text_encoder", None) is not None:
            self.prompts = PromptRecorder(self.pipe.text_encoder)

    def detach(self) -> None:
        super().detach()
        if self.prompts is not None:
            self.prompts.remove()
            self.prompts = None

    # Sampling-time control.
    def active(self, window: str) -> bool:
        """Whether the "cross" or "self" window covers the current step."""
        return self.step < active_steps(self.config[f"{window}_fraction"], self.total_steps, window == "cross",
                                        self.config.get("parity_schedule", False))

    def weights(self) -> torch.Tensor:
        """(pairs, E tokens) strengths for the current batch."""
        if self.row_weights is not None:
            return self.row_weights
        return torch.full((len(self.pairs), len(self.columns)), float(self.config["strength"]))

    def on_unet_call(self, args, kwargs):
        if self.probing:
            return None
        first = self.advance(args, kwargs)
        sample = args[0] if args else kwargs["sample"]
        rows = self.guided_rows(sample)
        call = None
        if self.fast:
            self.pairs = [(row, None) for row in range(sample.shape[0])[rows]]
        else:
            call = self.two_branches(args, kwargs, rows, first)
        self.recording = first
        if first:
            self.recorded, self.row_weights = {}, None
            if self.adapter is not None:
                self._probe(*(call or (args, kwargs)))
                self.recording = False
        return call

    def on_unet_output(self, args, kwargs, sample):
        if self.probing or not self.added:
            return None
        return sample[:sample.shape[0] - self.added]

    def two_branches(self, args, kwargs, rows: slice, first: bool):
        """The UNet call's (args, kwargs) with branch 0 appended: the rows `rows` get branch 1's context, copies of
        them with the original context are appended, and every other batch-first input is extended alike."""
        sample, timestep, context = (args[i] if i < len(args) else kwargs[k] for i, k in enumerate(UNET_INPUTS))
        rest = {k: v for k, v in kwargs.items() if k not in UNET_INPUTS}
        batch = sample.shape[0]
        mask = rest.pop("encoder_attention_mask", None)
        spliced, spliced_mask = self.branch_one(context[rows], None if mask is None else mask[rows], first)
        indices = list(range(batch))[rows]
        self.pairs = [(row, batch + k) for k, row in enumerate(indices)]
        self.added = len(indices)
        branch_one = context.clone()
        branch_one[rows] = spliced
        context = torch.cat([branch_one, context[rows]])
        if mask is not None:
            branch_one = mask.clone()
            branch_one[rows] = spliced_mask
            rest["encoder_attention_mask"] = torch.cat([branch_one, mask[rows]])
        rest = {k: _extend(v, batch, rows) for k, v in rest.items()}
        extra = tuple(_extend(value, batch, rows) for value in args[3:])
        return (torch.cat([sample, sample[rows]]), _extend(timestep, batch, rows), context, *extra), rest

    def branch_one(self, context: torch.Tensor, mask: torch.Tensor | None, first: bool):
        """Branch 1's contexts for the prompt rows `context` (rows, L, d), and their cross-attention mask."""
        if first:
            self.official = self._read_prompts(context)
        if self.official is None:
            self.reads = None
            words = self.c_star[0, self.columns]
            return tail_splice(context, words), None if mask is None else tail_mask(mask, len(self.columns))
        spliced, self.reads = self.official
        if mask is not None:  # each position of P' is attended as the position of P it reads; E's words always
            read = self.reads.to(mask.device)
            mask = torch.where(read >= 0, mask.gather(1, read.clamp_min(0)), torch.ones_like(mask))
        return spliced.to(context), mask

    def _read_prompts(self, context: torch.Tensor):
        """At a run's first step: refuse prompts that leave no room for E (when their text is known); with
        `parity_rows`, the official contexts and alignments from each prompt's joint encoding with E."""
        tokenizer, length, n_target = self.pipe.tokenizer, context.shape[1], len(self.columns)
        found = self.prompts.ids_of(context) if self.prompts is not None else [None] * len(context)
        texts = []
        for ids in found:
            if ids is not None:
                eot = int(first_eot_index(ids[None], tokenizer.eos_token_id)[0])
                texts.append(tokenizer.decode(ids[1:eot]))
                check_fit(texts[-1], eot - 1, self.target, n_target, length)
        if not self.config.get("parity_rows"):
            return None
        plain = encode(self.pipe, texts, warn=False) if len(texts) == len(found) else None
        if plain is None or not torch.equal(plain.input_ids, torch.stack(found)) or not torch.allclose(
                plain.embeddings.float(), context.float().to(plain.embeddings.device), rtol=1e-3, atol=1e-3):
            raise ErasekitError("parity_rows needs each prompt's text (the official rows encode 'P E' as one text), "
                                "and this call's context did not come from text that the pipeline encoded here "
                                "(prompt embeddings, or an encoder hooked for soft tokens): use parity_rows=false")
        spliced, reads = joint_contexts(self.pipe, texts, self.target, plain, self.c_star[0], n_target)
        return spliced, reads

    @torch.no_grad()
    def _probe(self, args, kwargs) -> None:
        """One extra UNet pass at the first step, with w = 0 (maps still copied; w = +1 for the authors' kind),
        records the E tokens' attention exactly as the adapter's training run at that w did; the adapter maps it
        to w."""
        self.probing = True
        self.row_weights = torch.full((len(self.pairs), len(self.columns)), self.adapter.probe_strength)
        try:
            self.pipe.unet(*args, **kwargs)
        finally:
            self.probing = False
        self.row_weights = self.adapter.strength(self.features().float()).to(self.c_star.dtype)

    def features(self) -> torch.Tensor:
        """(pairs, E tokens, layers): each E token's adapter feature per cross-attention layer (its gain with the
        projection inhibitor, its mean attention with the additive one), execution order."""
        missing = [name for name in self.order if name not in self.recorded]
        if missing:
            raise EditError(f"no attention was recorded for {missing[:3]}...: run a generation first")
        return torch.stack([self.recorded[name] for name in self.order], dim=-1)


class PromptRecorder:
    """Which token ids a UNet context row was encoded from. A forward hook on the pipeline's (first) text encoder
    keeps the ids and hidden states of its last calls; a context row whose leading features equal a row of one of
    those hidden states (SD1/SD2: the last; SDXL: the penultimate, concatenated with the second encoder's) came from
    those ids. Rows from given embeddings, or from another layer (clip_skip), are recognised as None."""

    def __init__(self, encoder, keep: int = 4):
        self.calls: deque = deque(maxlen=keep)
        self.handle = encoder.register_forward_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs, output) -> None:
        ids = args[0] if args else kwargs.get("input_ids")
        if ids is None:
            return
        hidden = getattr(output, "hidden_states", None)
        states = [output[0]] + ([hidden[-2]] if hidden else [])
        self.calls.append((ids.detach().cpu(), [s.detach() for s in states if s.ndim == 3]))

    def ids_of(self, context: torch.Tensor) -> list[torch.Tensor | None]:
        return [self._find(row) for row in context]

    def _find(self, row: torch.Tensor) -> torch.Tensor | None:
        for ids, states in reversed(self.calls):
            for state in states:
                width = state.shape[-1]
                if state.shape[1] != row.shape[0] or width > row.shape[-1]:
                    continue
                part = row[:, :width]
                candidates = (state[:, -1].to(part) == part[-1]).all(-1).nonzero().flatten().tolist()
                for k in candidates:  # the last position first, then the whole row
                    if torch.equal(state[k].to(part), part):
                        return ids[k]
        return None

    def remove(self) -> None:
        self.handle.remove()
        self.calls.clear()


def _extend(value, batch: int, rows: slice):
    """`value` with `value[rows]` appended along the batch, for every batch-first tensor in it (dicts, lists and
    tuples searched); anything else unchanged."""
    if torch.is_tensor(value):
        return torch.cat([value, value[rows]]) if value.ndim and value.shape[0] == batch else value
    if isinstance(value, dict):
        return {k: _extend(v, batch, rows) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_extend(v, batch, rows) for v in value)
    return value


def _resolution(unet, module_name: str) -> int:
    """Latent side length at a module, from its block's position (down blocks halve, up blocks double)."""
    parts = module_name.split(".")
    levels = len(unet.config.block_out_channels)
    if parts[0] == "down_blocks":
        return unet.config.sample_size >> int(parts[1])
    if parts[0] == "up_blocks":
        return unet.config.sample_size >> (levels - 1 - int(parts[1]))
    return unet.config.sample_size >> (levels - 1)
