"""Texts into token ids, the same way for any tokenizer: protein sequences fed as the
tokenizer expects them, sequences longer than the model counted (and truncated or cut
into windows), unknown tokens counted before any forward pass.

Protein language models come with two kinds of residue-level tokenizers. ESM's splits a
raw sequence (``MKTAYIA``) into residues itself; a BERT WordPiece vocabulary of single
residues (AntiBERTy, ProtBert) needs them separated by spaces, and reads a raw sequence
as one unknown word (measured with AntiBERTy: ``[CLS] [UNK] [SEP]`` for every protein).
:func:`residue_input` tells them apart by tokenizing a probe sequence both ways.

The tokenizer is used through its common interface only (``__call__``, ``get_vocab``,
``all_special_tokens``, ``unk_token_id``); nothing here imports torch or transformers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain

import numpy as np

from latentscape.tracking.errors import UsageError

__all__ = ["RESIDUES", "LONG_POLICIES", "MAX_UNK_FRACTION", "UNK_CHECK_TEXTS", "Tokenized", "TokenRows",
           "residue_input", "prepare_texts", "tokenize", "window_starts"]

RESIDUES = "ACDEFGHIKLMNPQRSTVWY"  # the 20 standard amino acids, one letter each
LONG_POLICIES = ("truncate", "window")
# Above this share of unknown tokens an extraction stops: its embeddings would describe
# the unknown token, not the inputs (a protein model fed unspaced residues: 100%).
MAX_UNK_FRACTION = 0.10
UNK_CHECK_TEXTS = 64  # the first batch whose tokens are checked before a run exists
# Input kinds: natural text as it is; residues as one string (ESM); residues spaced (BERT).
TEXT, RAW_RESIDUES, SPACED_RESIDUES = "text", "residues", "spaced residues"
_WORD_MARKERS = ("##", "\u2581", "\u0120")  # WordPiece continuation, SentencePiece and byte-level word starts


def _vocabulary_is_residues(tokenizer) -> bool:
    """Whether the tokenizer's ordinary (non-special) tokens are mostly single characters
    and include every standard residue: a residue-level protein vocabulary. Natural-language
    vocabularies hold single letters too, but among tens of thousands of longer pieces."""
    special = set(tokenizer.all_special_tokens)
    ordinary = []
    for token in tokenizer.get_vocab():
        if token in special or (token.startswith("<") and token.endswith(">")) or \
                (token.startswith("[") and token.endswith("]")):
            continue
        for marker in _WORD_MARKERS:
            token = token.removeprefix(marker)
        ordinary.append(token)
    singles = {token for token in ordinary if len(token) == 1}
    return bool(ordinary) and len(singles) >= 0.8 * len(ordinary) and \
        (set(RESIDUES) <= singles or set(RESIDUES.lower()) <= singles)


def residue_input(tokenizer) -> str:
    """How texts are fed to ``tokenizer``: ``"text"`` (as they are), ``"residues"`` (a
    residue-level tokenizer that splits a raw sequence itself, as ESM's does) or ``"spaced
    residues"`` (one that needs the residues separated by spaces, as BERT's WordPiece does)."""
    if not _vocabulary_is_residues(tokenizer):
        return TEXT
    probe = _vocabulary_case(tokenizer)(RESIDUES)
    ids = tokenizer(probe, add_special_tokens=False)["input_ids"]
    unknown = tokenizer.unk_token_id
    if len(ids) == len(probe) and unknown not in ids:
        return RAW_RESIDUES
    return SPACED_RESIDUES


def _vocabulary_case(tokenizer):
    """``str.upper``, or ``str.lower`` for a vocabulary whose residues are lower case only."""
    vocabulary = tokenizer.get_vocab()
    return str.lower if "A" not in vocabulary and "a" in vocabulary else str.upper


def prepare_texts(texts: Sequence[str], kind: str, tokenizer) -> list[str]:
    """Texts as ``tokenizer`` reads them: ``kind`` from :func:`residue_input`. Residues lose
    any whitespace and line breaks (a sequence copied from FASTA), take the vocabulary's
    case, and are spaced where the tokenizer needs it."""
    if kind == TEXT:
        return [str(text) for text in texts]
    case = _vocabulary_case(tokenizer)
    sequences = [case("".join(str(text).split())) for text in texts]
    if kind == SPACED_RESIDUES:
        return [" ".join(sequence) for sequence in sequences]
    return sequences


class TokenRows(Sequence):
    """One row of token values per piece (``rows[i]``: a list of ints, as a tokenizer's
    ``pad`` takes it), stored flat: ``values`` (int32) and ``offsets`` ((n + 1,), row ``i``
    is ``values[offsets[i]:offsets[i + 1]]``). A Python list per piece cost about 1.7 KB a
    WordNet gloss over its three keys (measured at 117,659 glosses: 192 MB), which made an
    extraction's memory grow with the data set; flat, it is 4 bytes a token."""

    def __init__(self, values: np.ndarray, offsets: np.ndarray):
        self.values, self.offsets = values, offsets

    @classmethod
    def from_lists(cls, rows: Sequence[Sequence[int]]) -> TokenRows:
        lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        return cls(np.fromiter(chain.from_iterable(rows), dtype=np.int32, count=int(lengths.sum())), _offsets(lengths))

    @classmethod
    def concatenate(cls, parts: Sequence[TokenRows]) -> TokenRows:
        lengths = np.concatenate([part.lengths for part in parts]) if parts else np.zeros(0, dtype=np.int64)
        values = np.concatenate([part.values for part in parts]) if parts else np.zeros(0, dtype=np.int32)
        return cls(values, _offsets(lengths))

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index):
        if isinstance(index, slice):
            first, last, step = index.indices(len(self))
            if step != 1:
                raise ValueError("token rows slice with step 1 only")
            last = max(first, last)
            return TokenRows(self.values[self.offsets[first]:self.offsets[last]],
                             self.offsets[first:last + 1] - self.offsets[first])
        index = range(len(self))[index]  # negative indices, and IndexError past the end
        return self.values[self.offsets[index]:self.offsets[index + 1]].tolist()



def _offsets(lengths: np.ndarray) -> np.ndarray:
    """(n + 1,) row starts of rows of ``lengths``, the last the total."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets

@dataclass
class Tokenized:
    """Token ids of ``n_texts`` texts as model inputs: ``pieces`` (key -> one row per
    piece: ``input_ids``, ``attention_mask``, ...), ``owner``: (n_pieces,) the text of each
    piece (one piece a text, several with windows), and what the tokenizer met."""

    pieces: dict[str, TokenRows]
    owner: np.ndarray
    n_texts: int
    n_tokens: int  # ordinary tokens (special ones and padding left out), before truncation
    n_unknown: int
    n_truncated: int  # texts longer than the model's input
    unknown_examples: Counter = field(default_factory=Counter)  # what became unknown tokens, where known

    @property
    def unk_fraction(self) -> float:
        return self.n_unknown / self.n_tokens if self.n_tokens else 0.0

    @property
    def truncated_fraction(self) -> float:
        return self.n_truncated / self.n_texts if self.n_texts else 0.0

    @property
    def lengths(self) -> np.ndarray:
        """(n_pieces,) tokens of each piece, special tokens included."""
        return self.pieces["input_ids"].lengths

    def of_texts(self, start: int, stop: int) -> Tokenized:
        """The pieces of texts ``start .. stop`` (owners renumbered from 0), for encoding a
        shard. The counts of what the tokenizer met describe the whole and stay here: the
        slice's are zero."""
        first, last = np.searchsorted(self.owner, [start, stop])  # owners ascend: pieces follow their texts
        return Tokenized(pieces={key: rows[first:last] for key, rows in self.pieces.items()},
                         owner=self.owner[first:last] - start, n_texts=stop - start, n_tokens=0, n_unknown=0,
                         n_truncated=0)

    def require_known(self, *, model: str, kind: str, where: str, limit: float = MAX_UNK_FRACTION) -> None:
        """A one-line UsageError when more than ``limit`` of the tokens are unknown."""
        if self.unk_fraction <= limit:
            return
        seen = ", ".join(f"{piece!r} x{count}" for piece, count in self.unknown_examples.most_common(5))
        cause = f"; most often {seen}" if seen else ""
        if kind == TEXT:
            fix = ("pass texts in the model's language, or a model whose vocabulary covers them; a protein model "
                   "needs a residue-level tokenizer in its folder")
        else:
            fix = (f"replace or drop the characters outside the model's {len(RESIDUES)} residues, or pick a model "
                   "whose vocabulary covers them")
        raise UsageError(f"{self.unk_fraction:.0%} of the tokens of {where} are unknown to the tokenizer of "
                         f"model {model} (inputs read as {kind}{cause}): its embeddings would describe the "
                         f"unknown token, not the inputs", fix)


def window_starts(length: int, window: int) -> list[int]:
    """Starts of windows of ``window`` tokens over ``length`` tokens, overlapping by half a
    window, the last one ending at the end: ``[0]`` when it fits in one."""
    if length <= window:
        return [0]
    step = max(window // 2, 1)
    starts = list(range(0, length - window + 1, step))
    if starts[-1] + window < length:
        starts.append(length - window)
    return starts


_TOKENIZE_CHUNK = 4096  # texts handed to the tokenizer at once


def tokenize(tokenizer, texts: Sequence[str], *, max_length: int, long: str = "truncate",
             kind: str = TEXT) -> Tokenized:
    """Tokenize ``texts`` (already :func:`prepare_texts`) into pieces of at most
    ``max_length`` tokens. A longer text is truncated (``long="truncate"``: its first
    tokens, then the closing special tokens, as the tokenizer's own truncation does) or cut
    into overlapping windows (``"window"``), each with the tokenizer's special tokens."""
    if long not in LONG_POLICIES:
        raise UsageError(f"unknown --long {long!r}", f"choose one of {', '.join(LONG_POLICIES)}")
    unknown_id = tokenizer.unk_token_id
    keys: list[str] = []
    parts: list[dict[str, TokenRows]] = []  # each chunk's pieces, flat
    owner: list[int] = []
    n_tokens = n_unknown = n_truncated = noted = 0
    unknown_examples: Counter = Counter()
    # A chunk of texts at a time: the tokenizer's own output (its encodings and lists, a few
    # KB a text) for every text at once made extract's peak memory grow with the data set
    # (measured with it, and 65k-row summary reads: 1.19 GB at 12,480 WordNet glosses, 1.60 GB
    # at 60,000).
    for first in range(0, max(len(texts), 1), _TOKENIZE_CHUNK):
        encoded = tokenizer(list(texts[first:first + _TOKENIZE_CHUNK]), truncation=False, padding=False,
                            return_special_tokens_mask=True)
        special_masks = encoded.pop("special_tokens_mask")
        keys = list(encoded.keys())
        chunk: dict[str, list[list[int]]] = {key: [] for key in keys}
        for offset, special in enumerate(special_masks):
            index = first + offset
            ids = encoded["input_ids"][offset]
            special = list(special)
            # Special tokens the tokenizer added before and after the text ([CLS] ... [SEP]).
            head = next((i for i, flag in enumerate(special) if not flag), len(special))
            tail = next((i for i, flag in enumerate(reversed(special)) if not flag), 0)
            body = list(range(head, len(ids) - tail))
            ordinary = [ids[i] for i in body if not special[i]]
            n_tokens += len(ordinary)
            if unknown_id is not None:
                unknown = sum(1 for token in ordinary if token == unknown_id)
                if unknown:
                    n_unknown += unknown
                    noted += 1
                    if noted <= _NOTED_TEXTS:
                        _note_unknown(unknown_examples, texts[index], kind, tokenizer)
            room = max(max_length - head - tail, 1)
            if len(body) > room:
                n_truncated += 1
            starts = window_starts(len(body), room) if long == "window" else [0]
            for start in starts:
                chosen = list(range(head)) + body[start:start + room] + list(range(len(ids) - tail, len(ids)))
                for key in keys:
                    values = encoded[key][offset]
                    chunk[key].append([values[i] for i in chosen])
                owner.append(index)
        parts.append({key: TokenRows.from_lists(rows) for key, rows in chunk.items()})
    pieces = {key: TokenRows.concatenate([part[key] for part in parts]) for key in keys}
    return Tokenized(pieces=pieces, owner=np.asarray(owner, dtype=np.int64), n_texts=len(texts), n_tokens=n_tokens,
                     n_unknown=n_unknown, n_truncated=n_truncated, unknown_examples=unknown_examples)


_NOTED_TEXTS = 50  # texts with unknown tokens whose unknown pieces are named: enough for the message


def _note_unknown(counter: Counter, text: str, kind: str, tokenizer) -> None:
    """Count what in ``text`` the vocabulary lacks: characters of a residue sequence, or
    the whitespace-separated words of a text that hold an unknown token (first 20 words)."""
    vocabulary = tokenizer.get_vocab()
    if kind != TEXT:
        counter.update(char for char in "".join(str(text).split()) if char not in vocabulary)
    else:
        unknown_id = tokenizer.unk_token_id
        for word in str(text).split()[:20]:
            if unknown_id in tokenizer(word, add_special_tokens=False)["input_ids"]:
                counter[word] += 1
