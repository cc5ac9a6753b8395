"""Baseline models: the TF-IDF module computes scikit-learn's TF-IDF and logistic regression, and a
scikit-learn estimator round-trips through a model folder in skops format, refusing untrusted types."""

import numpy as np
import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.models.baselines import ItemScores, SklearnClassifier, TfidfLinear, fit_tfidf_logreg, tfidf_rows
from pipeline.train.checkpoint import SKOPS_FILE, load_weights, save_model_dir, weights_file


def random_bags(rng, rows: int, width: int, vocab: int) -> np.ndarray:
    bags = rng.integers(2, vocab, size=(rows, width))
    bags[:, width // 2:] *= rng.random((rows, width - width // 2)) < 0.5  # padding (0) at random places
    bags[:, 1] = bags[:, 0]  # repeated ids: term frequency above 1
    return bags


def test_tfidf_module_matches_scikit_learn_tfidf_and_logistic_regression():
    from sklearn.feature_extraction.text import TfidfTransformer
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    vocab, limit = 60, 50  # ids from 50 on are ignored (character n-grams in the text task)
    train = {"bag": random_bags(rng, 80, 12, vocab), "y": rng.integers(0, 3, 80)}
    val = {"bag": random_bags(rng, 30, 12, vocab), "y": rng.integers(0, 3, 30)}
    model = TfidfLinear(vocab, 3, limit)
    chosen = fit_tfidf_logreg(model, train, val, (0.1, 1.0), seed=0)
    assert chosen["C"] in (0.1, 1.0)

    def counts(bags):
        kept = np.where(bags < limit, bags, 0)
        rows = np.repeat(np.arange(len(bags)), bags.shape[1])
        m = sp.csr_matrix((np.ones(kept.size), (rows, kept.ravel())), shape=(len(bags), vocab)).tolil()
        m[:, 0] = 0  # padding
        return m.tocsr()

    reference = TfidfTransformer(sublinear_tf=True).fit(counts(train["bag"]))
    expected = reference.transform(counts(val["bag"])).toarray()
    assert np.allclose(tfidf_rows(model, val["bag"]).toarray(), expected, atol=1e-5)

    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=chosen["C"], max_iter=3000, random_state=0).fit(reference.transform(counts(train["bag"])), train["y"])
    with torch.no_grad():
        logits = model(torch.as_tensor(val["bag"])).numpy()
    assert np.allclose(logits, lr.decision_function(expected), atol=1e-4)


def test_a_scikit_learn_model_round_trips_through_a_model_folder_in_skops_format(tmp_path):
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(200, 4)).astype(np.float32), rng.integers(0, 3, 200)
    model = SklearnClassifier(3, estimator=HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(x, y))
    save_model_dir(str(tmp_path), model, {"kind": "table"}, {"task": "tabular"})
    assert weights_file(str(tmp_path)) == SKOPS_FILE and not (tmp_path / "model.safetensors").exists()
    loaded = load_weights(str(tmp_path), SklearnClassifier(3))
    features = torch.from_numpy(x[:10])
    logits = loaded(features)
    assert logits.shape == (10, 3) and torch.allclose(logits, model(features))
    assert np.allclose(torch.softmax(logits, 1).numpy(), model.estimator.predict_proba(x[:10]), atol=1e-5)


def test_a_skops_file_with_an_untrusted_type_is_refused(tmp_path):
    import skops.io
    from sklearn.preprocessing import FunctionTransformer

    (tmp_path / SKOPS_FILE).write_bytes(skops.io.dumps(FunctionTransformer(func=print)))
    with pytest.raises(PipelineError, match="not trusted"):
        load_weights(str(tmp_path), SklearnClassifier(2))


def test_a_classifier_missing_a_class_in_training_gives_it_a_tiny_probability():
    from sklearn.linear_model import LogisticRegression

    x = np.array([[0.0], [1.0], [2.0], [3.0]], np.float32)
    model = SklearnClassifier(3, estimator=LogisticRegression().fit(x, [0, 0, 2, 2]))  # class 1 never seen
    probabilities = torch.softmax(model(torch.from_numpy(x)), 1).numpy()
    assert np.all(probabilities[:, 1] < 1e-9) and np.allclose(probabilities.sum(1), 1.0)


def test_item_scores_score_items_whoever_the_user_is():
    model = ItemScores(n_items=3, objective="ranking")
    model.scores.copy_(torch.tensor([0.0, 5.0, 1.0, 3.0]))
    assert model(torch.tensor([7, 8]), torch.tensor([1, 3])).tolist() == [5.0, 3.0]
