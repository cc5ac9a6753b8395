"""Text features fitted on the training split: tokenizer, vocabulary and sub-word ids.

Tokens are lower-cased words (apostrophes kept) and `!` / `?`; other punctuation separates
tokens. The vocabulary (words, and bigrams seen at least `min_bigram_count` times) comes from the
training split only; unseen words map to the out-of-vocabulary id 1, padding is 0. Each token also
gets hashed character n-grams (3-5, fastText-style), which carry meaning for words never seen in
training. Outputs: `subwords` (n, max_tokens, pieces) for sequence models and `bag` (n, max_bag)
for bag-of-features models, truncated or padded to the configured lengths.
"""

from __future__ import annotations

import re
import zlib
from collections import Counter, defaultdict

import numpy as np
import pandas as pd

from pipeline.data.features import LabelEncoder, Preprocessor, fit_partials

TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*|[!?]")
PAD, OOV = 0, 1


def tokenize(text: str) -> list[str]:
    return TOKEN.findall(str(text).lower())


def char_ngrams(token: str, sizes=(3, 4, 5)) -> list[str]:
    marked = f"<{token}>"
    return [marked[i:i + n] for n in sizes for i in range(len(marked) - n + 1)]


class TextFeatures(Preprocessor):
    kind = "text"

    def __init__(self, text_column: str, label_column: str | None, max_tokens: int, pieces: int, max_bag: int,
                 hash_buckets: int, min_count: int, min_bigram_count: int, max_vocab: int, max_chars: int,
                 state: dict | None = None):
        self.text_column, self.label_column = text_column, label_column
        self.input_columns = [text_column]
        self.max_tokens, self.pieces, self.max_bag = max_tokens, pieces, max_bag
        self.hash_buckets, self.min_count, self.min_bigram_count, self.max_vocab = hash_buckets, min_count, min_bigram_count, max_vocab
        self.max_chars = max_chars
        state = state or {}
        self.words: list[str] = state.get("words", [])
        self.bigrams: list[str] = state.get("bigrams", [])
        self.labels = LabelEncoder(state["classes"]) if state.get("classes") else None
        self.class_docs: list[list[int]] = state.get("class_docs", [])
        self._index()

    def _index(self) -> None:
        self.word_ids = {w: i + 2 for i, w in enumerate(self.words)}
        base = 2 + len(self.words)
        self.bigram_ids = {b: base + i for i, b in enumerate(self.bigrams)}
        self.hash_base = base + len(self.bigrams)

    @property
    def vocab_size(self) -> int:
        return self.hash_base + self.hash_buckets

    def fit(self, train_ds):
        def partial(batch: pd.DataFrame) -> dict:
            words, bigrams, docs = Counter(), Counter(), defaultdict(Counter)
            labels = batch[self.label_column].astype(str) if self.label_column else [None] * len(batch)
            for text, label in zip(batch[self.text_column], labels):
                tokens = tokenize(text)
                pairs = [f"{a} {b}" for a, b in zip(tokens, tokens[1:])]
                words.update(tokens)
                bigrams.update(pairs)
                docs[label].update(set(tokens) | set(pairs))  # texts of each class holding each word, bigram
            out = {"words": dict(words), "bigrams": dict(bigrams)}
            if self.label_column:
                out["labels"] = sorted(set(labels))
                out["docs"] = {label: dict(counts) for label, counts in docs.items()}
            return out

        partials = fit_partials(train_ds, partial)
        words, bigrams = Counter(), Counter()
        for p in partials:
            words.update(p["words"])
            bigrams.update(p["bigrams"])
        ranked = lambda counts, floor: [k for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if v >= floor]
        self.words = ranked(words, self.min_count)[: self.max_vocab]
        self.bigrams = ranked(bigrams, self.min_bigram_count)[: self.max_vocab]
        if self.label_column:
            self.labels = LabelEncoder(sorted({c for p in partials for c in p["labels"]}))
            docs = defaultdict(Counter)
            for p in partials:
                for label, counts in p["docs"].items():
                    docs[label].update(counts)
            self.class_docs = [[docs[label].get(t, 0) for t in self.words + self.bigrams] for label in self.labels.classes]
        self._index()
        return self

    @property
    def class_doc_counts(self) -> list[list[int]]:
        """Per class (in label order), how many training texts hold each id below `hash_base`
        (padding and out-of-vocabulary: 0): the naive-Bayes features' statistics."""
        if not self.class_docs:
            raise ValueError("this text preprocessor was fitted without labels (or saved before class counts "
                             "were kept): refit it to use the nb_ngram model")
        return [[0, 0, *counts] for counts in self.class_docs]

    def known_tokens(self, text: str) -> int:
        """How many of the text's tokens are in the training vocabulary (0: the model has nothing to go on)."""
        return sum(token in self.word_ids for token in tokenize(text))

    def hashed(self, piece: str) -> int:
        return self.hash_base + zlib.crc32(piece.encode()) % self.hash_buckets

    def encode(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        tokens = tokenize(text)
        subwords = np.zeros((self.max_tokens, self.pieces), dtype=np.int64)
        words: list[int] = []
        pieces: list[int] = []
        for t, token in enumerate(tokens):
            word, grams = self.word_ids.get(token, OOV), [self.hashed(g) for g in char_ngrams(token)]
            if t < self.max_tokens:
                row = [word, *grams][: self.pieces]
                subwords[t, : len(row)] = row
            words.append(word)
            pieces.extend(grams)
        bigrams = [self.bigram_ids[b] for b in (f"{a} {b}" for a, b in zip(tokens, tokens[1:])) if b in self.bigram_ids]
        bag = words + bigrams + pieces  # most informative first: truncation drops character n-grams
        bag_row = np.zeros(self.max_bag, dtype=np.int64)
        bag = bag[: self.max_bag]
        bag_row[: len(bag)] = bag
        return subwords, bag_row

    def transform(self, batch, with_target=True):
        encoded = [self.encode(text) for text in batch[self.text_column]]
        out = {
            "subwords": np.stack([e[0] for e in encoded]) if encoded else np.zeros((0, self.max_tokens, self.pieces), np.int64),
            "bag": np.stack([e[1] for e in encoded]) if encoded else np.zeros((0, self.max_bag), np.int64),
        }
        if with_target:
            out["y"] = self.labels.encode(np.asarray(batch[self.label_column]).astype(str))
        return out

    def state(self):
        return {"kind": "text", "text_column": self.text_column, "label_column": self.label_column,
                "max_tokens": self.max_tokens, "pieces": self.pieces, "max_bag": self.max_bag,
                "hash_buckets": self.hash_buckets, "min_count": self.min_count, "min_bigram_count": self.min_bigram_count,
                "max_vocab": self.max_vocab, "max_chars": self.max_chars, "words": self.words, "bigrams": self.bigrams,
                "classes": self.labels.classes if self.labels else None, "class_docs": self.class_docs}

    @classmethod
    def from_state(cls, state):
        params = {k: state[k] for k in ("text_column", "label_column", "max_tokens", "pieces", "max_bag", "hash_buckets",
                                        "min_count", "min_bigram_count", "max_vocab", "max_chars")}
        return cls(**params, state=state)
