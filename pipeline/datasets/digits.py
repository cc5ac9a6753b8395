"""scikit-learn's bundled digits: 1,797 real 8x8 grey-scale images of hand-written digits 0-9.

The data ships inside scikit-learn (a copy of the UCI "Optical Recognition of Handwritten Digits"
test set, E. Alpaydin and C. Kaynak, CC BY 4.0), so nothing is downloaded.
"""

from __future__ import annotations

import gzip
import importlib.util
import os

import numpy as np

SHAPE = (8, 8)
PIXEL_MAX = 16.0
CLASSES = [str(d) for d in range(10)]


def digits_file() -> str:
    """scikit-learn's bundled `digits.csv.gz`, found without importing scikit-learn: its import (about 2 s
    on two cores) would be paid by every image run and by each image Serve replica's health check."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the embedded digits ship inside scikit-learn: pip install scikit-learn")
    return os.path.join(spec.submodule_search_locations[0], "datasets", "data", "digits.csv.gz")


def load_digits_arrays() -> dict[str, np.ndarray]:
    """The digits as `sklearn.datasets.load_digits` reads them: 64 pixel values, then the digit, per line."""
    with gzip.open(digits_file(), "rt") as fh:
        data = np.loadtxt(fh, delimiter=",")
    n = len(data)
    return {
        "id": np.array([f"digits-{i:04d}" for i in range(n)]),
        "image": data[:, :-1].reshape(-1, *SHAPE).astype(np.float32),
        "label": data[:, -1].astype(int).astype(str),
    }
