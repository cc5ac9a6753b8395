"""Features for user-item interactions, fitted on the training split.

Users and items get indices (0 = unknown); items come from the catalog (e.g. movies.csv: id, title,
genres) plus any rated item. Item genres become a multi-hot matrix; a user's profile is the mean
genre vector of the items they rated in the training split. Popularity counts come from the training
split. For ranking evaluation each held-out row gets `n_negatives` items the user never rated
(anywhere in the data), sampled deterministically from the seed, user and item; a user who left
fewer unrated items than that is skipped (counted as `skipped_rows` in the metrics).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pipeline.data.features import Preprocessor, fit_partials


class InteractionFeatures(Preprocessor):
    kind = "interactions"

    def __init__(self, user_column: str, item_column: str, rating_column: str, n_negatives: int, eval_negatives: bool,
                 seed: int, state: dict | None = None):
        self.user_column, self.item_column, self.rating_column = user_column, item_column, rating_column
        self.input_columns = [user_column, item_column]
        self.n_negatives, self.eval_negatives, self.seed = n_negatives, eval_negatives, seed
        self.s: dict[str, Any] = state or {}
        if state:
            self._index()

    # --- fitting ---------------------------------------------------------------------------------
    def fit_all(self, train_ds, catalog: pd.DataFrame, history: pd.DataFrame) -> "InteractionFeatures":
        """`catalog`: item id, title, genres ("A|B"); `history`: every (user, item) rated in any split,
        used only to keep rated items out of sampled negatives and out of recommendations."""
        u, i, r = self.user_column, self.item_column, self.rating_column
        catalog = catalog.copy()
        catalog["item"] = catalog["item"].astype("int64")
        extra = sorted(set(history[i].astype("int64")) - set(catalog["item"]))
        catalog = pd.concat([catalog, pd.DataFrame({"item": extra, "title": [f"item {x}" for x in extra], "genres": ""})])
        catalog = catalog.drop_duplicates("item").sort_values("item")
        genre_lists = [sorted(g for g in str(gs).split("|") if g and g != "(no genres listed)" and g != "nan") for gs in catalog["genres"]]
        vocab = sorted({g for gl in genre_lists for g in gl})
        item_genres = [[vocab.index(g) for g in gl] for gl in genre_lists]
        # Each item's genres as 0/1 counts: the per-block sums of a user's rated items' genres are exact
        # integers, so the profiles do not depend on how the training split is cut into blocks.
        genre_table = pd.DataFrame(genre_indicators(item_genres, len(vocab), np.int8),  # travels with every block's task
                                   index=pd.Index(catalog["item"].to_numpy()))

        def partial(batch: pd.DataFrame) -> dict:
            items = batch[i].astype("int64")
            users = batch[u].astype("int64").to_numpy()
            counts = items.value_counts()
            sums = batch[r].astype("float64").groupby(items).agg(["sum", "count"])
            # Per user of the block: rows, then the summed genre counts of the items rated.
            by_user = genre_table.reindex(items.to_numpy()).fillna(0).astype("int64").groupby(users)
            per_user = by_user.sum()
            per_user.insert(0, "rows", by_user.size())
            # Plain Python numbers column-wise (`tolist`): row-wise `iterrows` took half a second a block.
            return {"item_counts": dict(zip(counts.index.tolist(), counts.tolist())),
                    "item_sums": {k: [a, b] for k, a, b in zip(sums.index.tolist(), sums["sum"].tolist(), sums["count"].tolist())},
                    "rating_sum": float(batch[r].astype("float64").sum()), "rows": len(batch),
                    "user_genres": dict(zip(per_user.index.tolist(), per_user.to_numpy().tolist()))}

        partials = fit_partials(train_ds, partial)
        users = sorted({int(k) for p in partials for k in p["user_genres"]})
        counts: dict[int, int] = {}
        sums: dict[int, list] = {}
        for p in partials:
            for k, v in p["item_counts"].items():
                counts[int(k)] = counts.get(int(k), 0) + v
            for k, (a, b) in p["item_sums"].items():
                acc = sums.setdefault(int(k), [0.0, 0])
                acc[0] += a
                acc[1] += b
        rows = sum(p["rows"] for p in partials)
        self.s = {
            "users": users, "items": catalog["item"].tolist(), "titles": catalog["title"].astype(str).tolist(),
            "genre_vocab": vocab, "item_genres": item_genres,
            "popularity": {str(k): v for k, v in counts.items()},
            "item_mean_rating": {str(k): a / b for k, (a, b) in sums.items()},
            "global_mean": sum(p["rating_sum"] for p in partials) / max(rows, 1),
            "history": {str(k): sorted(v.tolist()) for k, v in history.groupby(u)[i]},
        }
        self._index()
        # Profiles: each training user's mean genre vector over the items they rated in train.
        profile_sum = np.zeros((len(users) + 1, len(vocab)), np.float64)
        profile_n = np.zeros(len(users) + 1)
        for p in partials:
            at = self.user_index([int(k) for k in p["user_genres"]])
            rows_and_genres = np.asarray(list(p["user_genres"].values()), np.float64).reshape(len(at), len(vocab) + 1)
            np.add.at(profile_n, at, rows_and_genres[:, 0])
            np.add.at(profile_sum, at, rows_and_genres[:, 1:])
        self.s["user_profiles"] = np.round(profile_sum / np.maximum(profile_n, 1)[:, None], 5).tolist()
        return self

    def _index(self) -> None:
        self.users = pd.Index(self.s["users"])
        self.items = pd.Index(self.s["items"])
        self.history_sets = {int(k): set(v) for k, v in self.s["history"].items()}

    # --- lookups -------------------------------------------------------------------------------------
    @property
    def n_users(self) -> int:
        return len(self.s["users"])

    @property
    def n_items(self) -> int:
        return len(self.s["items"])

    def user_index(self, ids) -> np.ndarray:
        return self.users.get_indexer(pd.Index(np.asarray(ids, dtype=np.int64))) + 1  # unknown: -1 + 1 = 0

    def item_index(self, ids) -> np.ndarray:
        return self.items.get_indexer(pd.Index(np.asarray(ids, dtype=np.int64))) + 1

    def genre_matrix(self) -> np.ndarray:
        """Item index -> 0/1 genres; row 0, the unknown item, has none."""
        width = len(self.s["genre_vocab"])
        return np.vstack([np.zeros((1, width), np.float32), genre_indicators(self.s["item_genres"], width, np.float32)])

    def popularity_scores(self) -> np.ndarray:
        """Training-split rating counts per item index (index 0, the unknown item, scores 0)."""
        counts = np.zeros(self.n_items + 1)
        ids = [int(item) for item in self.s["popularity"]]
        counts[self.item_index(ids)] = list(self.s["popularity"].values())
        return counts

    def profile_from_preferences(self, preferences: dict[str, float]) -> np.ndarray:
        vector = np.zeros(len(self.s["genre_vocab"]), np.float32)
        for genre, weight in preferences.items():
            vector[self.s["genre_vocab"].index(genre)] = weight
        total = vector.sum()
        return vector / total if total > 0 else vector

    def rated(self, user_id: int) -> set:
        return self.history_sets.get(int(user_id), set())

    def negatives_for(self, user_id: int, item_id: int) -> np.ndarray | None:
        """`n_negatives` distinct items the user never rated, or None when there are not that many
        (the row is then left out of ranking metrics and counted as skipped)."""
        excluded = {int(x) for x in self.item_index(list(self.rated(user_id)))} | {0}
        available = self.n_items + 1 - len(excluded)
        if available < self.n_negatives:
            return None
        rng = np.random.default_rng([self.seed, int(user_id), int(item_id)])
        if available < 4 * self.n_negatives:  # few left: draw from them directly rather than by rejection
            pool = np.setdiff1d(np.arange(1, self.n_items + 1), np.fromiter(excluded, np.int64))
            return rng.choice(pool, self.n_negatives, replace=False).astype(np.int64)
        chosen: list[int] = []
        while len(chosen) < self.n_negatives:  # ends fast: at least 3 of 4 draws are unrated
            for candidate in rng.integers(1, self.n_items + 1, self.n_negatives * 2):
                if int(candidate) not in excluded:
                    excluded.add(int(candidate))
                    chosen.append(int(candidate))
                    if len(chosen) == self.n_negatives:
                        break
        return np.asarray(chosen, dtype=np.int64)

    # --- transforming ----------------------------------------------------------------------------
    def transform(self, batch, with_target=True, negatives: bool = False):
        out = {"user": self.user_index(batch[self.user_column]).astype(np.int64),
               "item": self.item_index(batch[self.item_column]).astype(np.int64)}
        if with_target:
            out["rating"] = pd.to_numeric(pd.Series(batch[self.rating_column])).to_numpy(np.float32)
        if negatives:  # `has_negatives` false: the user rated too much of the catalog to rank against it
            users, items = np.asarray(batch[self.user_column]), np.asarray(batch[self.item_column])
            sampled = [self.negatives_for(u, i) for u, i in zip(users, items)]
            none = np.zeros(self.n_negatives, np.int64)
            out["negatives"] = (np.stack([none if s is None else s for s in sampled])
                                if len(users) else np.zeros((0, self.n_negatives), np.int64))
            out["has_negatives"] = np.array([s is not None for s in sampled], dtype=bool)
        return out

    def transform_for(self, split: str):
        if self.eval_negatives and split in ("val", "test"):
            return lambda batch: self.transform(batch, with_target=True, negatives=True)
        return self.transform

    def state(self):
        return {"kind": "interactions", "user_column": self.user_column, "item_column": self.item_column,
                "rating_column": self.rating_column, "n_negatives": self.n_negatives, "eval_negatives": self.eval_negatives,
                "seed": self.seed, **self.s}

    @classmethod
    def from_state(cls, state):
        keys = ("user_column", "item_column", "rating_column", "n_negatives", "eval_negatives", "seed")
        return cls(**{k: state[k] for k in keys}, state={k: v for k, v in state.items() if k not in keys + ("kind",)})


def genre_indicators(item_genres: list[list[int]], width: int, dtype) -> np.ndarray:
    """One row per item, 1 in the columns of its genres (`item_genres`: genre indices per item)."""
    out = np.zeros((len(item_genres), width), dtype)
    for row, genres in enumerate(item_genres):
        out[row, genres] = 1
    return out
