"""Text sentiment classification: BiLSTM + attention and a mean-embedding model over sub-words.

Default data: Sentiment Labelled Sentences (imdb, amazon, yelp; embedded), with the review site as
a `source` column. Both candidates train on the same split; the best on validation is served.
"""

from __future__ import annotations

import os
import posixpath
from importlib import resources
from typing import Any

import pandas as pd
from pydantic import BaseModel, Field, model_validator

from pipeline.config import PipelineConfig
from pipeline.data.text import TextFeatures
from pipeline.tasks.base import ClassificationTask, RequestError

SOURCES = {"amazon_cells_labelled.txt": "amazon", "imdb_labelled.txt": "imdb", "yelp_labelled.txt": "yelp"}


class TextRequest(BaseModel):
    """One text (`text`) or several (`texts`)."""

    text: str | None = Field(None, description="one text to classify")
    texts: list[str] | None = Field(None, description="several texts, answered in order", max_length=256)

    @model_validator(mode="after")
    def exactly_one(self):
        if (self.text is None) == (self.texts is None):
            raise ValueError("give exactly one of `text` or `texts`")
        return self


def add_source(batch: pd.DataFrame) -> pd.DataFrame:
    """The review site from the file name (`amazon_cells_labelled.txt` -> amazon)."""
    names = batch["_source"].astype(str).map(posixpath.basename)
    batch["source"] = names.map(lambda n: SOURCES.get(n, n.split("_")[0].split(".")[0])).astype("string")
    return batch


class TextTask(ClassificationTask):
    name = "text"
    request_model = TextRequest
    passthrough_columns = None

    def feature_columns(self, cfg):
        return [cfg.features.get("text_column", "text")]

    def read(self, cfg: PipelineConfig, labelled: bool = True):
        from pipeline.data.ingest import read_dataset

        data = cfg.data
        if data.source == "builtin":
            root = str(resources.files("pipeline.datasets").joinpath("sentiment"))
            source = os.path.join(root, "*_labelled.txt")
        else:
            source = data.source
        schema = data.schema if labelled else {c: t for c, t in data.schema.items() if c in self.feature_columns(cfg)}
        ds = read_dataset(source, data.format, data.options, schema)
        return ds.map_batches(add_source, batch_format="pandas") if "_source" in ds.columns() else ds

    def make_preprocessor(self, cfg):
        f = dict(cfg.features)
        return TextFeatures(label_column=cfg.data.labeling.get("target", "label"), **f)

    def preprocessor_from_state(self, state):
        return TextFeatures.from_state(state)

    def build_model(self, cfg, preprocessor_state):
        from pipeline.models.text import ARCHITECTURES

        prep = TextFeatures.from_state(preprocessor_state)
        params = {k: v for k, v in cfg.model.items() if k not in ("arch", "name", "candidates", "serve")}
        arch = cfg.model.get("arch", "bilstm_attention")
        return ARCHITECTURES[arch](prep.vocab_size, len(prep.labels.classes), **params)

    def forward(self, model, batch):
        from pipeline.train.checkpoint import unwrap

        return model(batch[unwrap(model).input_column])

    def batch_rows(self, batch):
        return len(batch[self.target_column])

    @property
    def input_columns(self):
        return ("subwords", "bag")

    def evaluate(self, model_dir, splits, output_dir):
        from pipeline.evaluate import evaluate_classifier

        return evaluate_classifier(self, model_dir, splits, output_dir, by="source")

    def baselines(self, splits, results, output_dir, log):  # splits: flow.SplitCache
        """TF-IDF (word 1-2 grams) + logistic regression on the same split."""
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        from pipeline.evaluate import classification_metrics

        split = splits.prepared.splits
        text_column = splits.cfg.features.get("text_column", "text")
        frames = {name: split[name].select_columns([text_column, self.label_column]).to_pandas() for name in ("train", "test")}
        vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
        model = LogisticRegression(C=10.0, max_iter=2000)
        model.fit(vectorizer.fit_transform(frames["train"][text_column]), frames["train"][self.label_column].astype(str))
        predicted = model.predict(vectorizer.transform(frames["test"][text_column]))
        classes = sorted(frames["train"][self.label_column].astype(str).unique())
        scores = classification_metrics(frames["test"][self.label_column], predicted, classes)
        log(f"[text] baseline tfidf_logreg: test accuracy={scores['accuracy']:.4f}")
        return {"tfidf_logreg": {k: v for k, v in scores.items() if k in ("accuracy", "macro_f1", "rows")}}

    def request_to_batch(self, request: dict[str, Any], preprocessor: TextFeatures):
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

    def answer(self, request, predictor):
        batch = self.request_to_batch(request, predictor.preprocessor)
        answers = self.format_predictions(predictor.predict(batch), predictor.preprocessor)
        results = [{"text": t, "label": a["label"], "probability": a["probability"]}
                   for t, a in zip(batch[predictor.preprocessor.text_column], answers)]
        return {"predictions": results, "task": self.name, "run_id": predictor.run_id}

    def example_request(self):
        return {"texts": ["The food was great and the staff friendly.", "Terrible battery, it died after a day."]}, "positive, negative"
