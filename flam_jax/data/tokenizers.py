"""Text -> fixed-length token ids and attention mask, from three kinds of tokenizer files.

- RoBERTa byte-level BPE (``vocab.json`` + ``merges.txt``): ``<s> … </s>``, no prefix
  space, no lower-casing, pad id from the vocabulary (1 for roberta-base), FLAM_SPEC §4.
- Any Hugging Face ``tokenizer.json`` (WordPiece, BPE, Unigram): its own normaliser and
  special-token template (e.g. ``[CLS] … [SEP]`` for BERT).
- A sentencepiece ``.model`` (towers trained from scratch): BOS/EOS around the pieces
  when the model defines them.

Every text becomes exactly ``context_length`` ids (truncated, then padded) and a mask
marking the real tokens, like the transformers tokenizer classes with
``padding="max_length", truncation=True``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Sequence

import numpy as np
import sentencepiece
import tokenizers as hf_tokenizers

from flam_jax import paths
from flam_jax.errors import InputError, ModelLoadError

ROBERTA_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")


def _local(path_or_dir: str) -> str:
    if not paths.is_remote(path_or_dir):
        return os.fspath(path_or_dir)
    if paths.isfile(path_or_dir):
        return paths.local_copy(path_or_dir)
    if not paths.isdir(path_or_dir):
        raise ModelLoadError(f"tokenizer path not found: {path_or_dir}")
    wanted = {"tokenizer.json", "vocab.json", "merges.txt"}
    names = [n for n in paths.listdir(path_or_dir) if n in wanted or n.endswith(".model")]
    return paths.local_copy(path_or_dir, names)


@dataclasses.dataclass(frozen=True)
class TextReport:
    truncated: bool  # longer than the context length: the tail is not seen
    nothing_known: bool  # every token is the unknown token (or none is left)


class Tokenizer:
    """``encode(texts) -> (ids [N,L] int32, mask [N,L] int32)`` over one back end."""

    kind: str = ""

    def __init__(self, files: Sequence[str], context_length: int, pad_id: int, vocab_size: int):
        if context_length < 2:
            raise InputError(f"context length must be at least 2, got {context_length}")
        self.files = [os.path.abspath(f) for f in files]
        self.context_length = context_length
        self.pad_id = pad_id
        self.vocab_size = vocab_size

    def _token_ids(self, texts: list[str]) -> list[list[int]]:
        """Ids with special tokens, truncated to the context length (not padded)."""
        raise NotImplementedError

    def report(self, texts: list[str]) -> list[TextReport]:
        """What the tokenizer makes of each text: cut to the context length, or nothing known."""
        raise NotImplementedError

    def encode(self, texts: Sequence[str] | str) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts:
            raise InputError("no text queries given")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InputError(f"text query {i} is {type(text).__name__}, not a string")
            if not text.strip():
                raise InputError(f"text query {i} is empty")
        length = self.context_length
        ids = np.full((len(texts), length), self.pad_id, dtype=np.int32)
        mask = np.zeros((len(texts), length), dtype=np.int32)
        for row, token_ids in enumerate(self._token_ids(texts)):
            token_ids = token_ids[:length]
            ids[row, : len(token_ids)] = token_ids
            mask[row, : len(token_ids)] = 1
        return ids, mask

    def save(self, directory: str) -> list[str]:
        """Copy the tokenizer files into ``directory``; returns their new paths."""
        os.makedirs(directory, exist_ok=True)
        out = []
        for path in self.files:
            dest = os.path.join(directory, os.path.basename(path))
            if os.path.abspath(dest) != path:
                shutil.copyfile(path, dest)
            out.append(dest)
        return out


class HFTokenizer(Tokenizer):
    """A ``tokenizers.Tokenizer``: from a tokenizer.json or built for RoBERTa's BPE files."""

    def __init__(self, backend, files: Sequence[str], context_length: int, pad_id: int, kind: str):
        super().__init__(files, context_length, pad_id, backend.get_vocab_size(with_added_tokens=True))
        self.kind = kind
        backend.no_padding()
        # Truncation is template-aware: room is kept for the special tokens.
        backend.enable_truncation(max_length=context_length)
        self.backend = backend

    def _token_ids(self, texts: list[str]) -> list[list[int]]:
        return [enc.ids for enc in self.backend.encode_batch(texts)]

    def report(self, texts: list[str]) -> list[TextReport]:
        vocab = self.backend.get_vocab(with_added_tokens=True)
        unknown = {vocab[t] for t in ("[UNK]", "<unk>") if t in vocab}
        out = []
        for enc in self.backend.encode_batch(texts):
            content = [i for i, special in zip(enc.ids, enc.special_tokens_mask, strict=True) if not special]
            out.append(TextReport(bool(enc.overflowing), all(i in unknown for i in content)))
        return out


class SentencePieceTokenizer(Tokenizer):
    kind = "sentencepiece"

    def __init__(self, path: str, context_length: int):
        try:
            self.sp = sentencepiece.SentencePieceProcessor(model_file=path)
        except (OSError, RuntimeError) as err:
            raise ModelLoadError(f"cannot read sentencepiece model {path}: {err}") from err
        self.bos = [self.sp.bos_id()] if self.sp.bos_id() >= 0 else []
        self.eos = [self.sp.eos_id()] if self.sp.eos_id() >= 0 else []
        pad_id = self.sp.pad_id() if self.sp.pad_id() >= 0 else 0
        super().__init__([path], context_length, pad_id, self.sp.get_piece_size())

    def _token_ids(self, texts: list[str]) -> list[list[int]]:
        room = self.context_length - len(self.bos) - len(self.eos)
        return [self.bos + pieces[:room] + self.eos for pieces in self.sp.encode(texts)]

    def report(self, texts: list[str]) -> list[TextReport]:
        room = self.context_length - len(self.bos) - len(self.eos)
        unknown = self.sp.unk_id()
        return [
            TextReport(len(pieces) > room, all(i == unknown for i in pieces))
            for pieces in self.sp.encode(texts)
        ]


def roberta_bpe(vocab_path: str, merges_path: str, context_length: int = 77) -> HFTokenizer:
    """RoBERTa's byte-level BPE from vocab.json + merges.txt (what RobertaTokenizer does)."""
    try:
        bpe = hf_tokenizers.models.BPE.from_file(vocab_path, merges_path)
    except Exception as err:  # tokenizers raises plain Exceptions for bad files
        raise ModelLoadError(f"cannot read BPE files {vocab_path}, {merges_path}: {err}") from err
    backend = hf_tokenizers.Tokenizer(bpe)
    vocab = backend.get_vocab()
    absent = [t for t in ROBERTA_SPECIALS if t not in vocab]
    if absent:
        raise ModelLoadError(f"{vocab_path} lacks the RoBERTa special tokens {absent}")
    backend.pre_tokenizer = hf_tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = hf_tokenizers.decoders.ByteLevel()
    # sep and cls by position: tokenizers 0.23 (the GPU image's) renamed the keyword cls to cls_token.
    backend.post_processor = hf_tokenizers.processors.RobertaProcessing(
        ("</s>", vocab["</s>"]), ("<s>", vocab["<s>"]), add_prefix_space=False, trim_offsets=True
    )
    # <mask> swallows the space before it, as in RobertaTokenizer.
    backend.add_special_tokens(
        [
            hf_tokenizers.AddedToken(t, lstrip=(t == "<mask>"), normalized=False, special=True)
            for t in ROBERTA_SPECIALS
        ]
    )
    return HFTokenizer(backend, [vocab_path, merges_path], context_length, vocab["<pad>"], "roberta-bpe")


def hf_tokenizer_json(path: str, context_length: int = 77) -> HFTokenizer:
    try:
        backend = hf_tokenizers.Tokenizer.from_file(path)
    except Exception as err:
        raise ModelLoadError(f"cannot read {path}: {err}") from err
    padding = backend.padding
    if padding is not None:
        pad_id = padding["pad_id"]
    else:
        vocab = backend.get_vocab(with_added_tokens=True)
        pad_id = next((vocab[t] for t in ("[PAD]", "<pad>") if t in vocab), 0)
    return HFTokenizer(backend, [path], context_length, pad_id, "tokenizer.json")


def load_tokenizer(path_or_dir: str, context_length: int = 77) -> Tokenizer:
    """A tokenizer from a file or a directory.

    In a directory, ``tokenizer.json`` wins, then ``vocab.json`` + ``merges.txt``, then a
    single sentencepiece ``*.model``. A remote file or folder is copied here first (only its
    tokenizer files: an HF model folder also holds the weights).
    """
    path_or_dir = _local(path_or_dir)
    if os.path.isfile(path_or_dir):
        if path_or_dir.endswith(".json"):
            return hf_tokenizer_json(path_or_dir, context_length)
        if path_or_dir.endswith(".model"):
            return SentencePieceTokenizer(path_or_dir, context_length)
        raise ModelLoadError(f"unknown tokenizer file type: {path_or_dir}")
    if not os.path.isdir(path_or_dir):
        raise ModelLoadError(f"tokenizer path not found: {path_or_dir}")

    def inside(name: str) -> str:
        return os.path.join(path_or_dir, name)

    if os.path.isfile(inside("tokenizer.json")):
        return hf_tokenizer_json(inside("tokenizer.json"), context_length)
    if os.path.isfile(inside("vocab.json")) and os.path.isfile(inside("merges.txt")):
        return roberta_bpe(inside("vocab.json"), inside("merges.txt"), context_length)
    models = sorted(n for n in os.listdir(path_or_dir) if n.endswith(".model"))
    if len(models) == 1:
        return SentencePieceTokenizer(inside(models[0]), context_length)
    raise ModelLoadError(
        f"no tokenizer in {path_or_dir}: expected tokenizer.json, vocab.json + merges.txt "
        "or one sentencepiece .model"
    )
