"""The benchmarks' own set-up stays in step with the code they measure: `make bench` runs them only
rarely, so a config change that breaks one would otherwise go unnoticed until then."""

import importlib.util
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_data_stages_pandas_engine_runs_on_a_small_generated_adult_csv(tmp_path):
    data_stages = load("data_stages")
    csv = tmp_path / "adult_like.csv"
    data_stages.generate_csv(csv, 3000)
    cfg = data_stages.adult_config(str(csv))
    assert cfg.data.source == str(csv) and cfg.data.options.column_names[-1] == "income"
    assert data_stages.run_pandas(str(csv), str(tmp_path)) == 3000  # every row read, kept or quarantined
    assert (tmp_path / "quarantine.parquet").exists()


def test_image_cv_variants_are_valid_configs_and_a_fold_trains():
    import torch

    from pipeline.tasks import load_config
    from pipeline.tasks.image import ImagePreprocessor

    image_cv = load("image_cv")
    configs = [load_config("image", overrides={**image_cv.REFERENCE, **o, "train.epochs": 2}) for o in image_cv.VARIANTS.values()]
    assert {tuple(c.model.channels) for c in configs} == {(32, 64, 64), (64, 128, 128)}
    preprocessor = ImagePreprocessor([8, 8], [str(i) for i in range(10)], 16.0, 0.0, 1.0)
    torch.manual_seed(0)
    x, y = torch.randn(80, 1, 8, 8), torch.randint(0, 10, (80,))
    for cfg in (configs[0], configs[-1]):  # the reference, and the augmented variant
        assert 0.0 <= image_cv.fit_fold(cfg, preprocessor, x[:64], y[:64], x[64:], y[64:], seed=0) <= 1.0


def test_data_parallel_cpu_steps_a_planned_model_with_the_loops_optimizer():
    import numpy as np

    from pipeline.tasks import load_config
    from pipeline.tasks.image import ImagePreprocessor

    data_parallel = load("data_parallel_cpu")
    cfg = load_config("image", overrides={"model.channels": [4, 8], "model.dense": 8, "train.batch_size": 16})
    rng = np.random.default_rng(0)
    model = {"label": "image", "config": cfg.to_dict(),
             "preprocessor": ImagePreprocessor([8, 8], [str(i) for i in range(10)], 16.0, 0.0, 1.0).state(),
             "train": {"x": rng.normal(size=(40, 1, 8, 8)).astype(np.float32), "y": rng.integers(0, 10, 40)}}
    (ms,) = data_parallel.step_times([model], rank=0, ddp=False, warmup=1, steps=3)
    (ms_alone,) = data_parallel.step_times([model], rank=0, ddp=False, warmup=1, steps=3, parts=2)  # data_parallel: false
    assert ms > 0 and ms_alone > 0
