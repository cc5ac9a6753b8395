"""Held-out metrics computed here give what scikit-learn's reports give."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.tasks.classification import classification_metrics

CLASSES = ["<=50K", ">50K", "c"]
LABELS = st.sampled_from(CLASSES + ["unseen"])  # a test label the training split never had


@settings(max_examples=200, deadline=None)
@given(pairs=st.lists(st.tuples(LABELS, st.sampled_from(CLASSES)), min_size=1, max_size=60),
       classes=st.sampled_from([CLASSES, CLASSES[:2], CLASSES[::-1]]), as_series=st.booleans())
def test_classification_metrics_are_scikit_learns(pairs, classes, as_series):
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

    y_true = np.array([t for t, _ in pairs])
    y_pred = np.array([p if p in classes else classes[0] for _, p in pairs])
    given_true = pd.Series(y_true, dtype="string") if as_series else y_true
    metrics = classification_metrics(given_true, y_pred, classes)

    report = classification_report(y_true, y_pred, labels=classes, output_dict=True, zero_division=0)
    assert metrics["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert metrics["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0))
    assert metrics["rows"] == len(pairs)
    assert list(metrics["per_class"]) == classes
    for c in classes:
        assert metrics["per_class"][c] == pytest.approx({k: float(v) for k, v in report[c].items()})
    if set(y_true) & set(classes):
        assert metrics["confusion_matrix"] == confusion_matrix(y_true, y_pred, labels=classes).tolist()
    else:  # scikit-learn refuses this; the old evaluation failed on it
        assert metrics["confusion_matrix"] == [[0] * len(classes)] * len(classes)
