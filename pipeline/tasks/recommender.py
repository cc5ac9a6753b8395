"""Recommender: rating prediction (MSE) and top-k ranking (implicit feedback, sampled negatives).

Default data: MovieLens ml-latest-small (embedded) with movie titles and genres. Candidates: a
neural model with genre features and biased matrix factorisation, each trained for ratings on a
random 80/10/10 split and for ranking on a per-user leave-last-out split; item popularity is the
non-learned baseline. The served model is the ranking candidate with the best validation NDCG@10.
Ranking metrics follow the usual protocol: the held-out item ranked among 100 sampled items the
user never rated; HR@10 and NDCG@10.
"""

from __future__ import annotations

import math
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, Field, field_validator, model_validator

from pipeline.config import PipelineConfig
from pipeline.data.interactions import InteractionFeatures
from pipeline.errors import ConfigError
from pipeline.tasks.base import RequestError, Task

K = 10


class RecommendRequest(BaseModel):
    """A known user's id, or a new user's genre preferences (genre -> weight in [0, 1])."""

    user_id: int | None = Field(None, description="a user id from the training data")
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


def ranking_metrics(scores: np.ndarray) -> dict[str, float]:
    """scores: (rows, 1 + negatives), the held-out item first. HR@10 and NDCG@10 (ties count against)."""
    rank = (scores[:, 1:] >= scores[:, :1]).sum(axis=1)
    hit = rank < K
    return {"hr@10": float(hit.mean()), "ndcg@10": float(np.where(hit, 1.0 / np.log2(rank + 2), 0.0).mean()),
            "rows": int(len(scores))}


class RecommenderTask(Task):
    name = "recommender"
    route = "recommend"
    request_model = RecommendRequest
    label_column = None
    input_columns = ("user", "item")
    target_column = "rating"
    selection = ("ndcg@10", "max")

    # --- data --------------------------------------------------------------------------------------
    def feature_columns(self, cfg):
        return [cfg.features.get("user_column", "userId"), cfg.features.get("item_column", "movieId")]

    def read(self, cfg: PipelineConfig, labelled: bool = True):
        from pipeline.data.ingest import read_dataset

        data = cfg.data
        source = builtin_path("ratings.csv.gz") if data.source == "builtin" else data.source
        schema = data.schema if labelled else {c: t for c, t in data.schema.items() if c in self.feature_columns(cfg)}
        return read_dataset(source, data.format, data.options, schema)

    def catalog(self, cfg: PipelineConfig) -> pd.DataFrame:
        """Items with title and genres: the `data.options.items` file (builtin: movies.csv)."""
        from pipeline.data.ingest import read_dataset

        items = cfg.data.options.get("items", "builtin")
        uri = builtin_path("movies.csv.gz") if items == "builtin" else items
        frame = read_dataset(uri, "csv", {}).to_pandas()
        columns = cfg.data.options.get("item_columns", {"item": "movieId", "title": "title", "genres": "genres"})
        missing = [c for c in columns.values() if c not in frame]
        if missing:
            raise ConfigError(f"item catalog {uri} lacks column(s) {missing}")
        return pd.DataFrame({k: frame[v] for k, v in columns.items()})

    def fit_preprocessor(self, cfg, splits):
        f = cfg.features
        prep = InteractionFeatures(f.get("user_column", "userId"), f.get("item_column", "movieId"), f.get("rating_column", "rating"),
                                   int(f.get("negatives", 100)), cfg.data.split.method == "leave_last_out", cfg.seed)
        u, i = prep.user_column, prep.item_column
        history = pd.concat([splits[name].select_columns([u, i]).to_pandas() for name in ("train", "val", "test")])
        return prep.fit_all(splits["train"], self.catalog(cfg), history.astype("int64"))

    def make_preprocessor(self, cfg):
        raise ConfigError("the recommender's features need the catalog and history: use fit_preprocessor")

    def preprocessor_from_state(self, state):
        return InteractionFeatures.from_state(state)

    # --- model ---------------------------------------------------------------------------------------
    def build_model(self, cfg, preprocessor_state):
        from pipeline.models.recommender import BiasedMF, NeuralRecommender

        prep = InteractionFeatures.from_state(preprocessor_state)
        m = cfg.model
        common = {"objective": m.get("objective", "ranking"), "train_negatives": int(m.get("train_negatives", 4))}
        if m.get("arch", "neural") == "mf":
            return BiasedMF(prep.n_users, prep.n_items, int(m.get("dim", 32)), prep.s["global_mean"], **common)
        return NeuralRecommender(prep.n_users, prep.n_items, torch.from_numpy(prep.genre_matrix()),
                                 torch.tensor(prep.s["user_profiles"], dtype=torch.float32), int(m.get("dim", 32)),
                                 tuple(m.get("hidden", (64, 32))), float(m.get("dropout", 0.1)), **common)

    def forward(self, model, batch):
        from pipeline.train.checkpoint import unwrap

        net = unwrap(model)
        user, item = batch["user"], batch["item"]
        if net.objective == "rating" or not (net.training or "negatives" in batch):
            return model(user, item)  # a score per (user, item) pair
        if "negatives" in batch:  # held-out rows: the positive first, then its sampled negatives
            candidates = torch.cat([item[:, None], batch["negatives"]], dim=1)
            return model(user[:, None].expand_as(candidates).reshape(-1), candidates.reshape(-1)).view(candidates.shape)
        k = net.train_negatives
        negatives = torch.randint(1, net.n_items + 1, (len(item), k), device=item.device)
        scores = model(torch.cat([user, user.repeat_interleave(k)]), torch.cat([item, negatives.reshape(-1)]))
        return torch.cat([scores[: len(item), None], scores[len(item):].view(len(item), k)], dim=1)

    def loss(self, outputs, batch):
        if outputs.dim() == 1:  # ratings
            return torch.nn.functional.mse_loss(outputs.float(), batch["rating"].float())
        labels = torch.zeros_like(outputs, dtype=torch.float32)
        labels[:, 0] = 1.0
        return torch.nn.functional.binary_cross_entropy_with_logits(outputs.float(), labels)

    def batch_rows(self, batch):
        return len(batch["user"])

    def eval_sums(self, outputs, batch):
        if outputs.dim() == 1:
            err = outputs.float() - batch["rating"].float()
            return {"sq_err": float((err**2).sum()), "abs_err": float(err.abs().sum()), "rows": float(len(err))}
        m = ranking_metrics(outputs.float().cpu().numpy())
        return {"hits": m["hr@10"] * m["rows"], "ndcg": m["ndcg@10"] * m["rows"], "rows": float(m["rows"])}

    def eval_metrics(self, sums):
        rows = max(sums["rows"], 1.0)
        if "sq_err" in sums:
            return {"rmse": math.sqrt(sums["sq_err"] / rows), "mae": sums["abs_err"] / rows}
        return {"hr@10": sums["hits"] / rows, "ndcg@10": sums["ndcg"] / rows}

    def postprocess(self, outputs):
        return outputs.float().cpu().numpy()

    def prediction_columns(self, outputs, preprocessor):
        return {"score": outputs.astype(np.float32)}

    # --- evaluation ----------------------------------------------------------------------------------
    def score_split(self, predictor, ds, negatives: bool) -> np.ndarray:
        frame = ds.to_pandas()
        features = predictor.preprocessor.transform(frame, with_target=True, negatives=negatives)
        tensors = {k: torch.as_tensor(v) for k, v in features.items()}
        with torch.no_grad():
            return self.forward(predictor.model, tensors).float().numpy(), features

    def evaluate(self, model_dir, splits, output_dir):
        from pipeline.predictor import Predictor

        predictor = Predictor(model_dir)
        ranking = predictor.model.objective == "ranking"
        results = {}
        for name in ("val", "test"):
            scores, features = self.score_split(predictor, splits[name], negatives=ranking)
            if ranking:
                results[name] = ranking_metrics(scores)
            else:
                err = scores - features["rating"]
                results[name] = {"rmse": float(np.sqrt((err**2).mean())), "mae": float(np.abs(err).mean()), "rows": int(len(err))}
        return results

    def summarize(self, results, served):
        rating = {n: r for n, r in results.items() if "rmse" in r["val"]}
        best_rating = min(rating, key=lambda n: rating[n]["val"]["rmse"]) if rating else None
        out = []
        for split in ("test", "val"):
            metrics = dict(results[served][split])
            if best_rating:
                metrics.update(rmse=results[best_rating][split]["rmse"], mae=results[best_rating][split]["mae"],
                               rmse_model=best_rating)
            metrics["ranking_model"] = served
            out.append(metrics)
        return out[0], out[1]

    def baselines(self, splits, results, output_dir, log):
        """Item popularity (counts for ranking, item mean rating for ratings) on the same splits,
        and the matrix-factorisation candidates side by side."""
        from pipeline.flow import candidate_configs

        out: dict[str, dict] = {"popularity": {}}
        for _, ccfg in candidate_configs(splits.cfg):
            split = splits.get(ccfg)
            prep, _ = splits.featurized(ccfg)
            test = split["test"].to_pandas()
            if ccfg.model.get("objective") == "ranking" and "hr@10" not in out["popularity"]:
                features = prep.transform(test, with_target=True, negatives=True)
                counts = np.zeros(prep.n_items + 1)
                for item, count in prep.s["popularity"].items():
                    counts[prep.item_index([int(item)])[0]] = count
                candidates = np.concatenate([features["item"][:, None], features["negatives"]], axis=1)
                out["popularity"].update({k: v for k, v in ranking_metrics(counts[candidates]).items() if k != "rows"})
            if ccfg.model.get("objective") == "rating" and "rmse" not in out["popularity"]:
                means = prep.s["item_mean_rating"]
                predicted = np.array([means.get(str(int(i)), prep.s["global_mean"]) for i in test[prep.item_column]])
                err = predicted - test[prep.rating_column].to_numpy(np.float64)
                out["popularity"].update(rmse=float(np.sqrt((err**2).mean())), mae=float(np.abs(err).mean()))
        mf = {}
        for name, r in results.items():
            if name.startswith("mf"):
                mf.update({k: v for k, v in r["test"].items() if k != "rows"})
        if mf:
            out["mf"] = mf
        log(f"[recommender] baselines: {out}")
        return out

    # --- serving -----------------------------------------------------------------------------------------
    def request_to_batch(self, request, preprocessor):
        if request.get("genres") is not None:
            unknown = sorted(set(request["genres"]) - set(preprocessor.s["genre_vocab"]))
            if unknown:
                raise RequestError(f"genres: unknown genre(s) {unknown}; known: {preprocessor.s['genre_vocab']}")
        return request

    def answer(self, request, predictor):
        prep: InteractionFeatures = predictor.preprocessor
        self.request_to_batch(request, prep)
        k = int(request.get("k") or 10)
        items = np.arange(1, prep.n_items + 1)
        user_id = request.get("user_id")
        known = user_id is not None and prep.user_index([user_id])[0] > 0
        response: dict[str, Any] = {"task": self.name, "run_id": predictor.run_id, "user_id": user_id, "known_user": bool(known)}
        if user_id is not None and not known:
            scores = np.zeros(prep.n_items + 1)
            for item, count in prep.s["popularity"].items():
                scores[prep.item_index([int(item)])[0]] = count
            scores = scores[1:]
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
            with torch.no_grad():
                if predictor.model.uses_features or known:
                    scores = predictor.model(user, torch.from_numpy(items), profile).float().numpy()
                else:  # a model without item features: popularity weighted by the preferred genres
                    weights = prep.genre_matrix()[1:] @ prep.profile_from_preferences(request["genres"])
                    popularity = np.array([prep.s["popularity"].get(str(i), 0) for i in prep.s["items"]], dtype=float)
                    scores = weights * np.log1p(popularity)
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
