import numpy as np
import pandas as pd

from pipeline.data.split import assign_by_cutoffs, assign_by_threshold, stable_hash, stratum_cutoffs, unit_interval


def test_hash_is_stable_and_seeded():
    frame = pd.DataFrame({"id": [f"row-{i}" for i in range(100)]})
    a, b = stable_hash(frame, 42), stable_hash(frame.copy(), 42)
    assert (a == b).all()
    assert (stable_hash(frame, 43) != a).mean() > 0.99
    # Position-independent: a row's hash does not depend on its neighbours.
    assert stable_hash(frame.iloc[::-1], 42)[::-1].tolist() == a.tolist()


def test_threshold_assignment_follows_ratios():
    u = unit_interval(stable_hash(pd.DataFrame({"id": np.arange(20000)}), 1))
    parts = np.bincount(assign_by_threshold(u, [0.7, 0.15, 0.15]), minlength=3) / len(u)
    assert np.allclose(parts, [0.7, 0.15, 0.15], atol=0.01)


def test_stratified_cutoffs_give_exact_class_proportions():
    labels = np.array(["a"] * 100 + ["b"] * 40 + ["c"] * 7)
    hashes = stable_hash(pd.DataFrame({"id": np.arange(len(labels))}), 42)
    splits = assign_by_cutoffs(labels, hashes, stratum_cutoffs(labels, hashes, [0.7, 0.15, 0.15]))
    for label, n in (("a", 100), ("b", 40), ("c", 7)):
        counts = np.bincount(splits[labels == label], minlength=3)
        assert counts[0] == round(0.7 * n)
        assert counts.sum() == n


def test_stratified_assignment_does_not_depend_on_row_order():
    labels = np.array(["x", "y"] * 50)
    hashes = stable_hash(pd.DataFrame({"id": np.arange(100)}), 5)
    cut = stratum_cutoffs(labels, hashes, [0.6, 0.2, 0.2])
    order = np.random.default_rng(0).permutation(100)
    shuffled = assign_by_cutoffs(labels[order], hashes[order], stratum_cutoffs(labels[order], hashes[order], [0.6, 0.2, 0.2]))
    assert (assign_by_cutoffs(labels, hashes, cut)[order] == shuffled).all()


def test_a_block_is_cut_into_its_splits_and_an_empty_one_keeps_its_columns():
    import pyarrow as pa

    from pipeline.data.split import SPLIT_COLUMN, cut_block_or_empty

    block = pa.table({"id": [1, 2, 3, 4], SPLIT_COLUMN: pa.array([0, 2, 0, 1], pa.int8())})
    assert [part["id"].to_pylist() for part in cut_block_or_empty(block)] == [[1, 3], [4], [2]]
    empty = cut_block_or_empty(block.slice(0, 0))  # a task must return three blocks: the columns stay
    assert len(empty) == 3 and all(part.num_rows == 0 and part.column_names == ["id"] for part in empty)
    assert all(part.num_columns == 0 for part in cut_block_or_empty(pa.table({})))
