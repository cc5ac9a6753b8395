"""Each workload's defaults on data of the same kind that they were not tuned on (`--data`), generated
here in other shapes and sizes: PNGs of another size, sentences from another source, a table with other
columns, ratings of other items. Nothing in the defaults may assume the embedded data's shape."""

import json

import numpy as np

from tests.conftest import run_cli


def run(task: str, data, tmp_path, cluster, *extra: str) -> dict:
    out = tmp_path / "run"
    result = run_cli(["run", task, "--data", str(data), "--output", str(out), "--registry", str(tmp_path / "registry"), *extra],
                     cluster)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((out / "metrics.json").read_text())


def test_image_folder_of_12x12_pngs_in_three_classes(ray_cluster, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("bar", "column", "cross"):
        (tmp_path / "images" / label).mkdir(parents=True)
        for i in range(40):
            pixels = rng.integers(0, 60, (12, 12))
            row, col = rng.integers(2, 10, 2)
            if label in ("bar", "cross"):
                pixels[row, :] = 255
            if label in ("column", "cross"):
                pixels[:, col] = 255
            Image.fromarray(pixels.astype(np.uint8), mode="L").save(tmp_path / "images" / label / f"{i}.png")
    m = run("image", tmp_path / "images", tmp_path, ray_cluster, "--epochs", "8")
    assert sum(m["data"]["splits"].values()) == 120
    assert set(m["test"]["per_class"]) == {"bar", "column", "cross"}
    assert m["test"]["accuracy"] >= 0.6, m["test"]  # chance is 1/3
    prep = json.loads((tmp_path / "run" / "model" / "preprocessor.json").read_text())
    assert prep["shape"][-2:] == [12, 12], prep["shape"]  # taken from the data


def test_text_tsv_of_other_sentences_labelled_0_1(ray_cluster, tmp_path):
    rng = np.random.default_rng(1)
    good, bad = ["lovely", "superb", "delightful", "helpful", "great"], ["awful", "broken", "rude", "slow", "dreadful"]
    things = ["service", "ticket", "concert", "hotel", "app", "driver", "course", "meal"]
    lines = set()
    while len(lines) < 240:
        score = int(rng.integers(0, 2))
        words = [str(rng.choice(good if score else bad)), str(rng.choice(things)), str(rng.choice(things))]
        lines.add(f"the {words[1]} and the {words[2]} were {words[0]}\t{score}")
    (tmp_path / "forum_labelled.txt").write_text("\n".join(sorted(lines)) + "\n")
    m = run("text", tmp_path / "forum_labelled.txt", tmp_path, ray_cluster, "--epochs", "4")
    assert m["data"]["rows_kept"] == 240
    assert set(m["test"]["per_source"]) == {"forum"}
    assert m["test"]["accuracy"] >= 0.8, m["test"]
    assert {c["kind"] for c in m["candidates"].values()} == {"trained", "baseline"}


def test_tabular_csv_with_other_columns_and_label(ray_cluster, tmp_path):
    import pandas as pd

    rng = np.random.default_rng(2)
    n = 400
    table = pd.DataFrame({"temperature": rng.normal(20, 5, n).round(1), "city": rng.choice(["Oslo", "Lima", "Pune"], n),
                          "visits": rng.integers(0, 10, n), "member": rng.choice(["true", "false"], n)})
    table["churned"] = np.where((table["visits"] < 3) | (table["city"] == "Lima"), "yes", "no")
    table.to_csv(tmp_path / "customers.csv", index=False)
    m = run("tabular", tmp_path / "customers.csv", tmp_path, ray_cluster, "--epochs", "10", "--set", "data.labeling.target=churned")
    assert m["data"]["rows_kept"] == n and sum(m["data"]["splits"].values()) == n  # no test file: a 70/15/15 split
    assert m["test"]["accuracy"] >= 0.85, m["test"]
    prep = json.loads((tmp_path / "run" / "model" / "preprocessor.json").read_text())
    assert prep["numeric"] == ["temperature", "visits"] and prep["categorical"] == ["city", "member"]


def test_recommender_ratings_of_other_items_in_movielens_format(ray_cluster, tmp_path):
    users, items = 40, 60
    rng = np.random.default_rng(3)
    rows = []
    for user in range(1, users + 1):
        liked = rng.choice(items, 12, replace=False)
        for t, item in enumerate(liked):
            rows.append(f"{user},{900000 + int(item)},{float(rng.integers(1, 11)) / 2},{1_600_000_000 + 1000 * t}")
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + "\n".join(rows) + "\n")
    m = run("recommender", tmp_path / "ratings.csv", tmp_path, ray_cluster, "--epochs", "2")
    assert m["data"]["rows_kept"] == users * 12
    assert m["data"]["splits"]["test"] == users  # leave-last-out: each user's last rating
    assert 0.0 <= m["test"]["ndcg@10"] <= 1.0 and m["test"]["rmse"] > 0
