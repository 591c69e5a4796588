"""A CLIP BPE tokenizer for ShapeWorld, built deterministically from the domain's words.

It has SD1's layout (byte-level alphabet, `</w>` word ends, start/end tokens, padding with the end token) and a
small maximum length. Every domain word is one token; any other text falls back to sub-word pieces or single
bytes, as real CLIP does for rare words.
"""
from __future__ import annotations

import json
from pathlib import Path

from transformers import CLIPTokenizer

from .domain import all_words

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_LENGTH = 32


def _byte_alphabet() -> list[str]:
    """GPT-2/CLIP's reversible byte → printable unicode map, in CLIP's order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, n = printable[:], 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return [chr(c) for c in chars]


def _word_merges(word: str) -> list[tuple[str, str]]:
    """Left-to-right merges that assemble `word</w>` from its characters."""
    pieces = list(word[:-1]) + [word[-1] + "</w>"]
    merges, left = [], pieces[0]
    for piece in pieces[1:]:
        merges.append((left, piece))
        left += piece
    return merges


def _apply_bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """Standard BPE: repeatedly merge the adjacent pair with the lowest rank."""
    pieces = list(word[:-1]) + [word[-1] + "</w>"]
    while len(pieces) > 1:
        pairs = [(ranks.get(p, len(ranks)), i) for i, p in enumerate(zip(pieces, pieces[1:]))]
        rank, i = min(pairs)
        if rank == len(ranks):
            break
        pieces[i:i + 2] = [pieces[i] + pieces[i + 1]]
    return pieces


def build_vocab(words: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    alphabet = _byte_alphabet()
    tokens = alphabet + [c + "</w>" for c in alphabet]
    ranks: dict[tuple[str, str], int] = {}
    for word in words:
        for pair in _word_merges(word):
            ranks.setdefault(pair, len(ranks))
    # Chained merges of different words can interfere; a merge appended last only fires when no other does,
    # so appending one per unfinished word never breaks a word that already reaches a single token.
    for word in words:
        while len(pieces := _apply_bpe(word, ranks)) > 1:
            ranks[(pieces[0], pieces[1])] = len(ranks)
    merges = sorted(ranks, key=ranks.get)
    seen = set(tokens)
    for a, b in merges:
        if a + b not in seen:
            seen.add(a + b)
            tokens.append(a + b)
    vocab = {t: i for i, t in enumerate(tokens + [BOS, EOS])}
    return vocab, merges


def save_tokenizer(path: str | Path, words: list[str] | None = None, max_length: int = MAX_LENGTH) -> CLIPTokenizer:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    vocab, merges = build_vocab(words or all_words())
    (path / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (path / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    tokenizer = CLIPTokenizer(str(path / "vocab.json"), str(path / "merges.txt"), model_max_length=max_length,
                              bos_token=BOS, eos_token=EOS, pad_token=EOS, unk_token=EOS)
    tokenizer.save_pretrained(path)
    return tokenizer
