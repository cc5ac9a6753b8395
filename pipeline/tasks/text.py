"""Text sentiment classification: BiLSTM + attention and a mean-embedding model over sub-words, a
naive-Bayes-weighted n-gram model, and TF-IDF + logistic regression as the baseline candidate.

Default data: Sentiment Labelled Sentences (imdb, amazon, yelp; embedded), with the review site as
a `source` column. Every candidate uses the same split and features; the best on validation is served.
"""

from __future__ import annotations

import posixpath
from importlib import resources
from typing import Literal

import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveInt, model_validator

from pipeline.config import PipelineConfig, Section
from pipeline.data.ingest import read_dataset
from pipeline.data.text import TextFeatures
from pipeline.models.baselines import TfidfLinear, fit_tfidf_logreg
from pipeline.models.text import BiLSTMAttention, MeanEmbedding, NBNgram, nb_log_ratios
from pipeline.tasks.base import RequestError, source_schema
from pipeline.tasks.classification import ClassificationTask

SOURCES = {"amazon_cells_labelled.txt": "amazon", "imdb_labelled.txt": "imdb", "yelp_labelled.txt": "yelp"}
MAX_TEXTS = 256  # texts in one request


class TextFeatureSettings(Section):
    text_column: str  # the column of texts
    max_tokens: PositiveInt  # tokens kept per text (padding / truncation)
    pieces: PositiveInt  # word id + character n-grams per token
    max_bag: PositiveInt  # ids in the bag of words, bigrams and n-grams
    hash_buckets: PositiveInt  # character n-gram hash space
    min_count: PositiveInt  # words seen fewer times in training are out of vocabulary
    min_bigram_count: PositiveInt  # bigrams seen fewer times in training are dropped
    max_vocab: PositiveInt  # most frequent words (and bigrams) kept
    max_chars: PositiveInt  # a longer request answers 422


TFIDF_C_GRID = (1.0, 3.0, 10.0, 30.0, 100.0)  # tfidf_logreg: inverse regularisation, chosen on validation


class TextModelSettings(Section):
    arch: Literal["bilstm_attention", "mean_embedding", "nb_ngram", "tfidf_logreg"]
    embed_dim: PositiveInt  # embedding width
    hidden: PositiveInt  # LSTM width (bilstm_attention)
    dropout: NonNegativeFloat  # on token vectors and before the output layer; nb_ngram: on whole words and bigrams


class TextConfig(PipelineConfig):
    features: TextFeatureSettings
    model: TextModelSettings


class TextRequest(BaseModel):
    """One text (`text`) or several (`texts`)."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(None, description="one text to classify (at most the model's max_chars characters)")
    texts: list[str] | None = Field(None, description="several texts, answered in order", max_length=MAX_TEXTS)

    @model_validator(mode="after")
    def exactly_one(self):
        if (self.text is None) == (self.texts is None):
            raise ValueError("give exactly one of `text` or `texts`")
        return self


def site_of(path: str) -> str:
    """The review site a file holds (`amazon_cells_labelled.txt` -> amazon)."""
    name = posixpath.basename(path)
    return SOURCES.get(name, name.split("_")[0].split(".")[0])


def add_source(batch: pa.Table) -> pa.Table:
    """A `source` column from each row's file name, worked out once per distinct file; batches from
    sources that carry no file name (Parquet, JSON) pass unchanged."""
    if "_source" not in batch.column_names:
        return batch
    paths = batch["_source"].combine_chunks().dictionary_encode()
    sites = pa.array([site_of(p) for p in paths.dictionary.to_pylist()], pa.string()).take(paths.indices)
    if "source" in batch.column_names:
        return batch.set_column(batch.column_names.index("source"), "source", sites)
    return batch.append_column("source", sites)


class TextTask(ClassificationTask):
    name = "text"
    config_class = TextConfig
    request_model = TextRequest
    group_column = "source"
    baseline_archs = ("tfidf_logreg",)

    def read(self, cfg, columns=None):
        data = cfg.data
        if data.source == "builtin":
            source = str(resources.files("pipeline.datasets").joinpath("sentiment")) + "/*_labelled.txt"
        else:
            source = data.source
        ds = read_dataset(source, data.format, data.options, source_schema(cfg, columns))
        # Decided per batch, not by `ds.columns()`: on a lazy read that runs a limit(1) whose
        # cancelled read tasks can race their completion and abort the driver inside Ray
        # (task_manager.cc "Tried to complete task that was not pending", seen in CI).
        return ds.map_batches(add_source, batch_format="pyarrow")

    def fit_preprocessor(self, cfg, splits):
        return TextFeatures(label_column=cfg.data.labeling.target, **cfg.features.model_dump()).fit(splits["train"])

    def build_model(self, cfg, preprocessor):
        m = cfg.model
        if m.arch == "tfidf_logreg":  # words and bigrams: the bag's ids below the character n-grams'
            return TfidfLinear(preprocessor.vocab_size, len(preprocessor.labels.classes), preprocessor.hash_base)
        if m.arch == "nb_ngram":  # the training texts' class counts of every word and bigram
            return NBNgram(nb_log_ratios(preprocessor.class_doc_counts), len(preprocessor.labels.classes), m.dropout)
        if m.arch == "mean_embedding":
            return MeanEmbedding(preprocessor.vocab_size, len(preprocessor.labels.classes), m.embed_dim, m.dropout)
        return BiLSTMAttention(preprocessor.vocab_size, len(preprocessor.labels.classes), m.embed_dim, m.hidden, m.dropout)

    def fit_baseline(self, cfg, preprocessor, features):
        """TF-IDF of the training words and bigrams and a logistic regression, C chosen on validation."""
        model = self.build_model(cfg, preprocessor)
        return model, fit_tfidf_logreg(model, features["train"], features["val"], TFIDF_C_GRID, cfg.seed)

    def request_to_batch(self, request, preprocessor: TextFeatures):
        texts = [request["text"]] if request.get("text") is not None else list(request["texts"])
        field = "text" if request.get("text") is not None else "texts"
        if not texts:
            raise RequestError("texts: give at least one text")
        for i, text in enumerate(texts):
            where = field if field == "text" else f"texts[{i}]"
            if not text.strip():
                raise RequestError(f"{where}: empty text")
            if len(text) > preprocessor.max_chars:
                raise RequestError(f"{where}: {len(text)} characters, more than the limit of {preprocessor.max_chars}")
        return pd.DataFrame({preprocessor.text_column: texts})

    def respond(self, batch, predictions, preprocessor: TextFeatures):
        """Each text's label and probability, and how many of its words the model knows: with none
        (another script, only punctuation) the label is null and a note says why, not a guess."""
        answers = []
        for text, p in zip(batch[preprocessor.text_column], predictions):
            known = preprocessor.known_tokens(text)
            answer = {"text": text, "label": p["label"], "probability": p["probability"], "known_tokens": known}
            if known == 0:
                answer.update(label=None, probability=None,
                              note="no word of this text is in the model's vocabulary, so it cannot be classified")
            answers.append(answer)
        return {"predictions": answers}

    def example_request(self):
        return {"texts": ["The food was great and the staff friendly.", "Terrible battery, it died after a day."]}, "positive, negative"
