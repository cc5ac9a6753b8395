"""Recommender: rating prediction (MSE) and top-k ranking (implicit feedback, sampled negatives).

Default data: MovieLens ml-latest-small (embedded) with movie titles and genres. Candidates: a
neural model with genre features and biased matrix factorisation, each trained for ratings on a
random 80/10/10 split and for ranking on a per-user leave-last-out split (the objectives: see
tasks/ranking.py); item popularity (ranking) and the item's mean rating (rating) are the fitted
baseline candidates. The served model is the ranking candidate with the best validation NDCG@10.
"""

from __future__ import annotations

import math
from importlib import resources
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveInt, field_validator, model_validator

from pipeline.config import DataConfig, PipelineConfig, Section, TableOptions, problem
from pipeline.data.ingest import read_dataset
from pipeline.data.interactions import InteractionFeatures
from pipeline.data.local import to_pandas
from pipeline.errors import ConfigError
from pipeline.models.baselines import ItemScores
from pipeline.models.recommender import BiasedMF, NeuralRecommender
from pipeline.tasks.base import RequestError, source_schema
from pipeline.tasks.ranking import RankingTask


class ItemColumns(Section):
    item: str = "movieId"  # the item id, as in the ratings
    title: str = "title"  # shown in recommendations
    genres: str = "genres"  # "A|B|C"


class RecommenderOptions(TableOptions):
    items: str = "builtin"  # the item catalog (id, title, genres); builtin: MovieLens' movies.csv
    item_columns: ItemColumns = ItemColumns()  # the catalog's column names


class RecommenderData(DataConfig):
    options: RecommenderOptions


class InteractionSettings(Section):
    user_column: str  # user ids in the ratings
    item_column: str  # item ids in the ratings
    rating_column: str  # the rating (regression target; any rating is a positive for ranking)
    negatives: PositiveInt  # sampled unrated items per held-out rating (ranking protocol)


class RecommenderModelSettings(Section):
    arch: Literal["neural", "mf", "popularity"]  # popularity: the baseline, fitted not trained
    objective: Literal["ranking", "rating"]
    dim: PositiveInt  # embedding width
    hidden: list[PositiveInt]  # neural: the dense head
    dropout: NonNegativeFloat  # neural
    train_negatives: PositiveInt  # ranking: sampled negatives per positive in training


class RecommenderConfig(PipelineConfig):
    data: RecommenderData
    features: InteractionSettings
    model: RecommenderModelSettings

    @model_validator(mode="after")
    def no_label_smoothing(self):
        if self.train.label_smoothing:
            raise problem("train.label_smoothing", "classifiers only; the recommender's losses have no classes to smooth")
        return self


class RecommendRequest(BaseModel):
    """A known user's id, or a new user's genre preferences (genre -> weight in [0, 1])."""

    model_config = ConfigDict(extra="forbid")

    user_id: int | None = Field(None, ge=-(2**63), le=2**63 - 1, description="a user id from the training data")
    genres: dict[str, float] | None = Field(None, description='for a new user, e.g. {"Comedy": 1.0, "Drama": 0.5}')
    k: int = Field(10, ge=1, le=100, description="how many movies")

    @field_validator("genres")
    @classmethod
    def weights_in_range(cls, value):
        if value is not None:
            bad = {g: w for g, w in value.items() if not (0.0 <= w <= 1.0) or math.isnan(w)}
            if bad:
                raise ValueError(f"genre weights must be between 0 and 1: {bad}")
            if not any(value.values()):
                raise ValueError("give at least one genre with a positive weight")
        return value

    @model_validator(mode="after")
    def exactly_one(self):
        if (self.user_id is None) == (self.genres is None):
            raise ValueError("give exactly one of `user_id` or `genres`")
        return self


def builtin_path(name: str) -> str:
    return str(resources.files("pipeline.datasets").joinpath("movielens", name))


class RecommenderTask(RankingTask):
    name = "recommender"
    config_class = RecommenderConfig
    request_model = RecommendRequest
    route = "recommend"
    baseline_archs = ("popularity",)

    # --- data --------------------------------------------------------------------------------------
    def read(self, cfg, columns=None):
        source = builtin_path("ratings.csv.gz") if cfg.data.source == "builtin" else cfg.data.source
        return read_dataset(source, cfg.data.format, cfg.data.options, source_schema(cfg, columns))

    def catalog(self, cfg: RecommenderConfig) -> pd.DataFrame:
        """Items with title and genres: the `data.options.items` file (builtin: movies.csv)."""
        items = cfg.data.options.items
        uri = builtin_path("movies.csv.gz") if items == "builtin" else items
        frame = read_dataset(uri, "csv").to_pandas()
        columns = cfg.data.options.item_columns.model_dump()
        missing = [c for c in columns.values() if c not in frame]
        if missing:
            raise ConfigError(f"item catalog {uri} lacks column(s) {missing}")
        return pd.DataFrame({k: frame[v] for k, v in columns.items()})

    def fit_preprocessor(self, cfg, splits):
        f = cfg.features
        prep = InteractionFeatures(f.user_column, f.item_column, f.rating_column, f.negatives,
                                   cfg.data.split.method == "leave_last_out", cfg.seed)
        history = pd.concat([to_pandas(splits[name], [f.user_column, f.item_column]) for name in ("train", "val", "test")])
        return prep.fit_all(splits["train"], self.catalog(cfg), history.astype("int64"))

    # --- model ---------------------------------------------------------------------------------------
    def build_model(self, cfg, preprocessor: InteractionFeatures):
        m = cfg.model
        if m.arch == "popularity":
            return ItemScores(preprocessor.n_items, m.objective, m.train_negatives)
        if m.arch == "mf":
            return BiasedMF(preprocessor.n_users, preprocessor.n_items, m.dim, preprocessor.s["global_mean"], m.objective,
                            m.train_negatives)
        return NeuralRecommender(preprocessor.n_users, preprocessor.n_items, torch.from_numpy(preprocessor.genre_matrix()),
                                 torch.tensor(preprocessor.s["user_profiles"], dtype=torch.float32), m.dim, m.hidden,
                                 m.dropout, m.objective, m.train_negatives)

    # --- evaluation ----------------------------------------------------------------------------------
    def fit_baseline(self, cfg, preprocessor: InteractionFeatures, features):
        """Item popularity: training rating counts rank items (ranking); the item's mean training rating,
        else the global mean, predicts ratings (rating)."""
        model = self.build_model(cfg, preprocessor)
        if cfg.model.objective == "ranking":
            scores = preprocessor.popularity_scores()
        else:
            scores = np.full(preprocessor.n_items + 1, preprocessor.s["global_mean"])
            means = preprocessor.s["item_mean_rating"]
            scores[preprocessor.item_index([int(i) for i in means])] = list(means.values())
        model.scores.copy_(torch.as_tensor(scores, dtype=torch.float32))
        return model, {}

    # --- serving -----------------------------------------------------------------------------------------
    def answer_batch(self, requests, predictor):
        answers = []
        for request in requests:  # each request scores every movie: already a batch of its own
            try:
                answers.append(self.recommend(request, predictor))
            except RequestError as exc:
                answers.append(exc)
        return answers

    def recommend(self, request, predictor):
        prep: InteractionFeatures = predictor.preprocessor
        if request.get("genres") is not None:
            unknown = sorted(set(request["genres"]) - set(prep.s["genre_vocab"]))
            if unknown:
                raise RequestError(f"genres: unknown genre(s) {unknown}; known: {prep.s['genre_vocab']}")
        k = int(request.get("k") or 10)
        items = np.arange(1, prep.n_items + 1)
        user_id = request.get("user_id")
        known = user_id is not None and prep.user_index([user_id])[0] > 0
        response: dict[str, Any] = {"task": self.name, "run_id": predictor.run_id, "user_id": user_id, "known_user": bool(known)}
        if user_id is not None and not known:
            scores = prep.popularity_scores()[1:]
            response.update(method="popular", note=f"user {user_id} is not in the training data: these are the most popular movies")
            excluded = prep.rated(user_id)
        else:
            user = torch.zeros(len(items), dtype=torch.long)
            profile = None
            if known:
                user[:] = int(prep.user_index([user_id])[0])
                response["method"] = "model"
            else:
                vector = torch.from_numpy(prep.profile_from_preferences(request["genres"]))
                profile = vector.expand(len(items), -1)
                response["method"] = "model_from_genres" if predictor.model.uses_features else "popular_in_genres"
            with torch.inference_mode():
                if predictor.model.uses_features or known:
                    device = predictor.device
                    scores = predictor.model(user.to(device), torch.from_numpy(items).to(device),
                                             None if profile is None else profile.to(device)).float().cpu().numpy()
                else:  # a model without item features: popularity weighted by the preferred genres
                    weights = prep.genre_matrix()[1:] @ prep.profile_from_preferences(request["genres"])
                    scores = weights * np.log1p(prep.popularity_scores()[1:])
            excluded = prep.rated(user_id) if known else set()
        order = np.argsort(-scores, kind="stable")
        picked = []
        for position in order:
            movie_id = int(prep.s["items"][position])
            if movie_id in excluded:
                continue
            picked.append({"movie_id": movie_id, "title": prep.s["titles"][position], "score": float(scores[position])})
            if len(picked) == k:
                break
        response["recommendations"] = picked
        return response

    def example_request(self):
        return {"user_id": 15, "k": 5}, None
