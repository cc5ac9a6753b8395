"""The ranking layer: models that score (user, item) pairs, trained for one of two objectives.

- `rating`: MSE on observed ratings; metrics RMSE and MAE.
- `ranking`: implicit feedback, binary cross-entropy of each positive against `train_negatives` items
  sampled at random; evaluated with the usual protocol: the held-out item ranked among the sampled
  items the user never rated (the preprocessor's `negatives`), HR@10 and NDCG@10.

The model (`cfg.model.objective`) decides which; it exposes `objective`, `n_items` and
`train_negatives`. Features are `user`, `item` (indices), `rating` and, for held-out ranking rows,
`negatives`. The served candidate is the ranking model with the best validation NDCG@10; metrics.json's
`test` adds the best rating model's RMSE.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from pipeline.models import unwrap
from pipeline.tasks.base import Task

K = 10


def ranking_rows(scores: np.ndarray, has_negatives: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """scores: (rows, 1 + negatives), the held-out item first. Per row: hit@10 and its NDCG@10 term
    (ties count against the held-out item); rows without negatives count as `skipped` only."""
    rank = (scores[:, 1:] >= scores[:, :1]).sum(axis=1)
    ranked = np.ones(len(scores), bool) if has_negatives is None else np.asarray(has_negatives, bool)
    hit = (rank < K) & ranked
    return {"hits": hit.astype(np.float64), "ndcg": np.where(hit, 1.0 / np.log2(rank + 2), 0.0),
            "skipped": (~ranked).astype(np.float64)}


def rating_rows(errors):
    """Per row: squared and absolute error (NumPy arrays or tensors alike)."""
    return {"sq_err": errors**2, "abs_err": abs(errors)}


def summed(rows: dict) -> dict[str, float]:
    return {**{k: float(v.sum()) for k, v in rows.items()}, "rows": float(len(next(iter(rows.values()))))}


def metrics_from_sums(sums: dict[str, float]) -> dict[str, float]:
    if "sq_err" in sums:
        rows = max(sums["rows"], 1.0)
        return {"rmse": math.sqrt(sums["sq_err"] / rows), "mae": sums["abs_err"] / rows}
    ranked = max(sums["rows"] - sums.get("skipped", 0.0), 1.0)
    out = {"hr@10": sums["hits"] / ranked, "ndcg@10": sums["ndcg"] / ranked}
    if sums.get("skipped"):
        out["skipped_rows"] = int(sums["skipped"])
    return out


def ranking_metrics(scores: np.ndarray, has_negatives: np.ndarray | None = None) -> dict[str, float]:
    return {**metrics_from_sums(summed(ranking_rows(scores, has_negatives))), "rows": int(len(scores))}


class RankingTask(Task):
    selection = ("ndcg@10", "max")

    # --- training -----------------------------------------------------------------------------------
    def forward(self, model, batch):
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

    def loss(self, cfg, outputs, batch):
        if outputs.dim() == 1:  # ratings
            return torch.nn.functional.mse_loss(outputs.float(), batch["rating"].float())
        labels = torch.zeros_like(outputs, dtype=torch.float32)
        labels[:, 0] = 1.0
        return torch.nn.functional.binary_cross_entropy_with_logits(outputs.float(), labels)

    def eval_sums(self, outputs, batch):
        if outputs.dim() == 1:
            return summed(rating_rows(outputs.float() - batch["rating"].float()))
        has = batch.get("has_negatives")
        return summed(ranking_rows(outputs.float().cpu().numpy(), None if has is None else has.cpu().numpy()))

    def eval_metrics(self, sums):
        return metrics_from_sums(sums)

    # --- evaluation ---------------------------------------------------------------------------------
    def score_rows(self, predictor, batch):
        """Per row: its squared and absolute error (rating), or its hit and NDCG term (ranking)."""
        ranking = predictor.model.objective == "ranking"
        features = predictor.preprocessor.transform(batch, with_target=True, negatives=ranking)
        tensors = {k: torch.as_tensor(v) for k, v in features.items()}
        with torch.no_grad():
            outputs = self.forward(predictor.model, tensors).float().numpy()
        return ranking_rows(outputs, features["has_negatives"]) if ranking else rating_rows(outputs - features["rating"])

    def split_metrics(self, rows: pd.DataFrame, preprocessor):
        return {**metrics_from_sums(summed({k: rows[k].to_numpy() for k in rows.columns})), "rows": int(len(rows))}

    def summarize(self, results, served):
        """The served ranking model's HR@10 / NDCG@10 beside the best rating model's RMSE; the
        matrix-factorisation candidates are the `mf` baseline."""
        rating = {n: r for n, r in results.items() if "rmse" in r["val"]}
        best_rating = min(rating, key=lambda n: rating[n]["val"]["rmse"]) if rating else None
        out = {}
        for split in ("test", "val"):
            metrics = dict(results[served][split])
            if best_rating:
                metrics.update(rmse=results[best_rating][split]["rmse"], mae=results[best_rating][split]["mae"],
                               rmse_model=best_rating)
            metrics["ranking_model"] = served
            out[split] = metrics
        mf = {}
        for name, r in results.items():
            if name.startswith("mf"):
                mf.update({k: v for k, v in r["test"].items() if k != "rows"})
        if mf:
            out["baselines"] = {"mf": mf}
        return out

    def prediction_columns(self, outputs, preprocessor):
        return {"score": outputs.astype(np.float32)}
