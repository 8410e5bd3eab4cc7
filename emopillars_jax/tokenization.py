"""Fast tokenization with the `tokenizers` library: texts or (context, utterance) pairs ->
int32 numpy arrays padded to a length chosen per batch.

The padding/truncation stored in a tokenizer.json (all-MiniLM-L6-v2 pads everything to 128)
is switched off: the caller decides the length of each batch (buckets or a multiple).
Token types: 0 for the context (and the leading special tokens), 1 from the utterance on.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import AssetError, EmoPillarsError, reading_text

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.txt", "vocab.json", "merges.txt", "added_tokens.json")


def padded_length(longest: int, *, buckets: Sequence[int] | None = None,
                  multiple: int | None = None, max_length: int | None = None) -> int:
    """The batch length: the smallest bucket >= longest, else a multiple, capped at max_length."""
    n = longest
    if buckets:
        fits = [b for b in sorted(buckets) if b >= longest]
        n = fits[0] if fits else longest
    if multiple and n % multiple:
        n += multiple - n % multiple
    return min(n, max_length) if max_length else n


class Tokenizer:
    def __init__(self, backend, pad_id: int, folder: Path | None = None):
        backend.no_padding()
        backend.no_truncation()
        self.backend, self.pad_id, self.folder = backend, pad_id, folder

    @classmethod
    def from_folder(cls, folder: str | Path) -> "Tokenizer":
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers.implementations import BertWordPieceTokenizer
        folder = Path(folder)
        cfg_path = folder / "tokenizer_config.json"
        cfg = {}
        if cfg_path.is_file():
            try:
                with reading_text(cfg_path):
                    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise AssetError(f"{cfg_path}: invalid JSON ({exc})") from None
            if not isinstance(cfg, dict):
                raise AssetError(f"{cfg_path}: expected a JSON object")
        found = [folder / n for n in ("tokenizer.json", "vocab.txt") if (folder / n).is_file()]
        if not found:
            raise AssetError(f"{folder}: no tokenizer.json or vocab.txt")
        path = found[0]
        try:
            if path.name == "tokenizer.json":
                backend = HFTokenizer.from_file(str(path))
            else:
                backend = BertWordPieceTokenizer(
                    str(path), lowercase=cfg.get("do_lower_case", True))._tokenizer
        except Exception as exc:  # noqa: BLE001 - the Rust library raises plain Exceptions
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise AssetError(f"{path}: not a readable tokenizer file ({reason})") from None
        pad_token = cfg.get("pad_token")
        if isinstance(pad_token, dict):
            pad_token = pad_token.get("content")
        pad_id = None
        for candidate in (pad_token, "[PAD]", "<pad>"):
            if isinstance(candidate, str) and \
                    (pad_id := backend.token_to_id(candidate)) is not None:
                break
        if pad_id is None:
            raise AssetError(f"{folder}: the tokenizer has no padding token ([PAD] or <pad>)")
        return cls(backend, pad_id, folder)

    def save(self, out_dir: str | Path) -> None:
        """Copy the tokenizer files; tokenizer.json is written with padding/truncation off."""
        out_dir = Path(out_dir)
        if self.folder is not None:
            for name in TOKENIZER_FILES:
                if (self.folder / name).is_file() and name != "tokenizer.json":
                    (out_dir / name).write_bytes((self.folder / name).read_bytes())
        self.backend.save(str(out_dir / "tokenizer.json"))

    def mark_second_segment(self) -> None:
        """Give the second segment token type 1 in the post-processor, as our arrays do.

        RoBERTa's processor types every token 0; a context-aware RoBERTa (grown to two
        token types) needs transformers' tokenizer to type the utterance 1 too.
        """
        from tokenizers.processors import TemplateProcessing
        proc = json.loads(self.backend.to_str()).get("post_processor") or {}
        if proc.get("type") != "RobertaProcessing":
            return
        (cls, cls_id), (sep, sep_id) = proc["cls"], proc["sep"]
        self.backend.post_processor = TemplateProcessing(
            single=f"{cls} $A {sep}", pair=f"{cls} $A:0 {sep} {sep} $B:1 {sep}:1",
            special_tokens=[(cls, cls_id), (sep, sep_id)])

    def _encode(self, texts, contexts):
        if contexts is None:
            return self.backend.encode_batch(list(texts))
        if len(contexts) != len(texts):
            raise EmoPillarsError(f"got {len(texts)} texts but {len(contexts)} contexts")
        # a missing context (None or "") encodes the utterance alone
        encs = [None] * len(texts)
        pairs = [i for i, c in enumerate(contexts) if c]
        single = [i for i, c in enumerate(contexts) if not c]
        for idx, enc in zip(pairs, self.backend.encode_batch(
                [(contexts[i], texts[i]) for i in pairs])):
            encs[idx] = enc
        for idx, enc in zip(single, self.backend.encode_batch([texts[i] for i in single])):
            encs[idx] = enc
        return encs

    def unpadded(self, texts: Sequence[str], contexts: Sequence[str | None] | None = None, *,
                 max_length: int = 128) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Truncated, unpadded (input ids, token type ids) per example, int32."""
        if isinstance(texts, str):
            raise EmoPillarsError("expected a list of texts, got a single string")
        self.backend.enable_truncation(max_length)   # longest_first, as transformers
        try:
            encs = self._encode(texts, contexts)
        finally:
            self.backend.no_truncation()
        ids, types = [], []
        for enc in encs:
            ids.append(np.asarray(enc.ids, np.int32))
            t = np.zeros(len(enc.ids), np.int32)
            if 1 in enc.sequence_ids:   # the utterance and its closing special token(s)
                t[enc.sequence_ids.index(1):] = 1
            types.append(t)
        return ids, types

    def pad(self, ids: Sequence[np.ndarray], types: Sequence[np.ndarray], length: int
            ) -> dict[str, np.ndarray]:
        out = {"input_ids": np.full((len(ids), length), self.pad_id, np.int32),
               "attention_mask": np.zeros((len(ids), length), np.int32),
               "token_type_ids": np.zeros((len(ids), length), np.int32)}
        for row, (i, t) in enumerate(zip(ids, types)):
            k = min(len(i), length)
            out["input_ids"][row, :k], out["token_type_ids"][row, :k] = i[:k], t[:k]
            out["attention_mask"][row, :k] = 1
        return out

    def __call__(self, texts: Sequence[str], contexts: Sequence[str | None] | None = None, *,
                 max_length: int = 128, buckets: Sequence[int] | None = None,
                 multiple: int | None = 8, length: int | None = None) -> dict[str, np.ndarray]:
        """-> {"input_ids", "attention_mask", "token_type_ids"}: int32 [B, L].

        L is `length` if given, else the batch's longest sequence padded up to a bucket
        boundary or a multiple, at most max_length.
        """
        ids, types = self.unpadded(texts, contexts, max_length=max_length)
        longest = max((len(i) for i in ids), default=1)
        n = length or padded_length(longest, buckets=buckets, multiple=multiple,
                                    max_length=max_length)
        return self.pad(ids, types, n)
