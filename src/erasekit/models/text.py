"""Prompt encoding exactly as the pipelines do it, plus what erasure methods need: ids, masks, first-EoT index."""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from ..errors import PromptError


@dataclass
class EncodedPrompts:
    embeddings: torch.Tensor         # (batch, max_length, d_text): what the UNet's cross-attention receives
    input_ids: torch.Tensor          # (batch, max_length), of the first tokenizer
    attention_mask: torch.Tensor     # (batch, max_length): 1 for SoT, words and the first EoT; 0 for padding
    eot_index: torch.Tensor          # (batch,): position of the first end-of-text token
    pooled: torch.Tensor | None = None  # SDXL's pooled embedding of the second encoder


def first_eot_index(input_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """Index of the first EoT token in each row, from the ids (never from word counts)."""
    is_eos = input_ids == eos_token_id
    if not bool(is_eos.any(dim=1).all()):
        raise PromptError("a tokenized prompt has no end-of-text token")
    return is_eos.int().argmax(dim=1)


def warn_truncated(tokenizer, prompts: list[str], stacklevel: int = 3) -> None:
    """One warning per prompt longer than the tokenizer's length: how many tokens are dropped, and which."""
    max_length = tokenizer.model_max_length
    full = tokenizer(prompts, padding="longest", return_tensors="pt").input_ids
    if full.shape[1] <= max_length:
        return
    for prompt, row in zip(prompts, full):
        ids = [i for i in row.tolist() if i != tokenizer.pad_token_id or i == tokenizer.eos_token_id]
        cut = [i for i in ids[max_length - 1:] if i != tokenizer.eos_token_id]
        if cut:
            shown = prompt if len(prompt) <= 60 else prompt[:57] + "..."
            warnings.warn(f"prompt longer than the model's {max_length} tokens: {len(cut)} tokens dropped, cut "
                          f"{tokenizer.decode(cut)!r} from {shown!r}", stacklevel=stacklevel)


def tokenize(tokenizer, prompts: list[str], warn: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad/truncate to the tokenizer's length, warning with the words that were cut off."""
    max_length = tokenizer.model_max_length
    tokens = tokenizer(prompts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
    if warn:
        warn_truncated(tokenizer, prompts, stacklevel=4)
    ids = tokens.input_ids
    eot = first_eot_index(ids, tokenizer.eos_token_id)
    mask = (torch.arange(ids.shape[1])[None, :] <= eot[:, None]).long()
    return ids, mask


def split_words(tokenizer, text: str) -> tuple[list[str], list[str]]:
    """(words the tokenizer maps to its unknown token, words it splits into several pieces)."""
    unknown, split = [], []
    for word in text.split():
        ids = tokenizer(word, add_special_tokens=False).input_ids
        if tokenizer.unk_token_id is not None and tokenizer.unk_token_id != tokenizer.eos_token_id and \
                tokenizer.unk_token_id in ids:
            unknown.append(word)
        elif len(ids) > 1:
            split.append(word)
    return unknown, split


def check_concept_words(pipe, texts: list[str]) -> None:
    """Refuse concept texts with words the model cannot represent; warn about words split into pieces. A model
    that knows only whole words (ShapeWorld: every vocabulary word is one token) refuses split words too."""
    for text in texts:
        unknown, split = split_words(pipe.tokenizer, text)
        if getattr(pipe, "erasekit_shapeworld", False):
            unknown, split = unknown + split, []
        if unknown:
            raise PromptError(f"{text!r}: the model's tokenizer cannot represent {', '.join(map(repr, unknown))} "
                              "(not in its vocabulary), so erasing it would erase unknown-token rows")
        if split:
            warnings.warn(f"{text!r}: the tokenizer splits {', '.join(map(repr, split))} into pieces; the edit "
                          "acts on those pieces", stacklevel=3)


def check_prompts(prompts: list[str] | str) -> list[str]:
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts:
        raise PromptError("no prompts given: the prompt list is empty")
    if not all(isinstance(p, str) for p in prompts):
        raise PromptError("prompts must be strings")
    return prompts


@torch.no_grad()
def encode(pipe, prompts: list[str] | str, warn: bool = True) -> EncodedPrompts:
    """Encode prompts as `pipe` does for generation (SD1/SD2: last hidden state; SDXL: both encoders'
    penultimate hidden states concatenated, and the second encoder's pooled output). `warn=False` silences the
    warning about prompts cut to the tokenizer's length (for internal prompt lists)."""
    prompts = check_prompts(prompts)
    device = pipe.text_encoder.device if pipe.text_encoder is not None else pipe.text_encoder_2.device
    ids, mask = tokenize(pipe.tokenizer, prompts, warn)
    if getattr(pipe, "text_encoder_2", None) is None:
        hidden = pipe.text_encoder(ids.to(device))[0]
        return EncodedPrompts(hidden, ids, mask, first_eot_index(ids, pipe.tokenizer.eos_token_id))
    hiddens, pooled = [], None
    for tokenizer, encoder in ((pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2)):
        encoder_ids = ids if tokenizer is pipe.tokenizer else tokenize(tokenizer, prompts, warn=False)[0]
        out = encoder(encoder_ids.to(device), output_hidden_states=True)
        pooled = out[0]
        hiddens.append(out.hidden_states[-2])
    return EncodedPrompts(torch.cat(hiddens, dim=-1), ids, mask, first_eot_index(ids, pipe.tokenizer.eos_token_id),
                          pooled)


def token_embeddings(pipe, input_ids: torch.Tensor) -> torch.Tensor:
    """The text encoder's input token embeddings for `input_ids` (batch, length, d_token): what soft-prompt attacks
    optimise."""
    return pipe.text_encoder.get_input_embeddings()(input_ids.to(pipe.text_encoder.device))


def encode_token_embeddings(pipe, input_ids: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
    """Encode prompts whose token embeddings are given (they may be soft and carry gradients): the encoder runs as
    for `input_ids`, whose end tokens still mark the EoT, with the embedding lookup's output replaced. SD1/SD2
    pipelines (one text encoder). Returns what the UNet's cross-attention receives."""
    if getattr(pipe, "text_encoder_2", None) is not None:
        raise PromptError("encoding from token embeddings is implemented for one-encoder (SD1/SD2) pipelines")
    lookup = pipe.text_encoder.get_input_embeddings()
    if embeddings.shape[:2] != input_ids.shape or embeddings.shape[-1] != lookup.embedding_dim:
        raise PromptError(f"token embeddings {tuple(embeddings.shape)} do not fit ids {tuple(input_ids.shape)} and "
                          f"the encoder's width {lookup.embedding_dim}")
    handle = lookup.register_forward_hook(lambda module, args, output: embeddings.to(output.dtype))
    try:
        return pipe.text_encoder(input_ids.to(pipe.text_encoder.device))[0]
    finally:
        handle.remove()
