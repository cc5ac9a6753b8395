"""End-to-end deep-learning pipeline on Ray (Data -> Train -> Tune -> Serve)."""

__version__ = "0.1.0"
