"""scikit-learn's bundled digits: 1,797 real 8x8 grey-scale images of hand-written digits 0-9.

The data ships inside scikit-learn (a copy of the UCI "Optical Recognition of Handwritten Digits"
test set, E. Alpaydin and C. Kaynak, CC BY 4.0), so nothing is downloaded.
"""

from __future__ import annotations

import numpy as np

SHAPE = (8, 8)
PIXEL_MAX = 16.0
CLASSES = [str(d) for d in range(10)]


def load_digits_arrays() -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    n = len(digits.target)
    return {
        "id": np.array([f"digits-{i:04d}" for i in range(n)]),
        "image": digits.images.astype(np.float32),
        "label": digits.target.astype(str),
    }
