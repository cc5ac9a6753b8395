"""PNG plots for run outputs (headless: the Agg backend, no display needed), written to any storage URI."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pipeline.storage import save_figure  # noqa: E402


def confusion_matrix_png(matrix: np.ndarray, classes: list[str], path: str, title: str = "Confusion matrix (test)") -> str:
    n = len(classes)
    size = max(4.0, 0.5 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), classes, rotation=45 if max(len(c) for c in classes) > 3 else 0, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    threshold = matrix.max() / 2 if matrix.size else 0
    for i in range(n):
        for j in range(n):
            ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if matrix[i, j] > threshold else "black")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path


def learning_curves_png(history: list[dict], path: str, metric: str, title: str = "Learning curves") -> str:
    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train loss")
    if "val_loss" in history[0]:
        left.plot(epochs, [h["val_loss"] for h in history], marker="o", label="val loss")
    left.set_xlabel("epoch")
    left.set_ylabel("loss")
    left.legend()
    right.plot(epochs, [h.get(metric, np.nan) for h in history], marker="o", color="tab:green", label=metric)
    right.set_xlabel("epoch")
    right.set_ylabel(metric)
    right.legend()
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path


def lr_vs_metric_png(table, metric: str, path: str) -> str:
    """Each trial's best validation metric against its learning rate, one colour per LR schedule."""
    column = f"best_{metric}"
    lr = "train.lr" if "train.lr" in table else "lr_start"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    groups = table.groupby("train.schedule.name") if "train.schedule.name" in table else [("config schedule", table)]
    for schedule, rows in groups:
        ax.scatter(rows[lr], rows[column], label=str(schedule), s=40, alpha=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(f"best {metric}")
    ax.set_title(f"{metric} vs learning rate, per schedule")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path


def trial_curves_png(histories: dict, metric: str, path: str) -> str:
    """Validation metric per epoch for every trial (short lines: stopped early by the scheduler)."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for trial, frame in histories.items():
        if metric in frame:
            ax.plot(frame["training_iteration"], frame[metric], marker=".", linewidth=1, label=trial)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"learning curves per trial ({len(histories)} trials)")
    if len(histories) <= 12:
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path
