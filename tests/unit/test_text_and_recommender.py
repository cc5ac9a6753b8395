import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError

from pipeline.data.interactions import InteractionFeatures
from pipeline.data.split import HASH_COLUMN, assign_leave_last_out, last_rows_per_group, stable_hash
from pipeline.data.text import TextFeatures, char_ngrams, tokenize
from pipeline.models.recommender import BiasedMF, NeuralRecommender
from pipeline.models.text import BiLSTMAttention, MeanEmbedding, NBNgram, nb_log_ratios
from pipeline.tasks.base import RequestError
from pipeline.tasks.ranking import ranking_metrics
from pipeline.tasks.recommender import RecommendRequest
from pipeline.tasks.text import TextRequest, TextTask


def test_tokenizer_lowercases_and_splits_punctuation():
    assert tokenize("Great phone!! Didn't work, though...") == ["great", "phone", "!", "!", "didn't", "work", "though"]
    assert char_ngrams("ok") == ["<ok", "ok>", "<ok>"]


def text_features(max_tokens=5):
    prep = TextFeatures("sentence", "label", max_tokens=max_tokens, pieces=4, max_bag=30, hash_buckets=64, min_count=1,
                        min_bigram_count=2, max_vocab=100, max_chars=5000,
                        state={"words": ["good", "bad"], "bigrams": ["not good"], "classes": ["negative", "positive"]})
    return prep


def test_text_features_oov_padding_and_truncation():
    prep = text_features(max_tokens=3)
    out = prep.transform(pd.DataFrame({"sentence": ["good movie", "not good at all really"], "label": ["positive", "negative"]}))
    sub, bag = out["subwords"], out["bag"]
    assert sub.shape == (2, 3, 4) and bag.shape == (2, 30)
    assert sub[0, 0, 0] == 2 and sub[0, 1, 0] == 1  # "good" known, "movie" out of vocabulary
    assert (sub[0, 2] == 0).all()  # padding
    assert sub[1, :, 0].tolist() == [1, 2, 1]  # truncated to 3 tokens: not, good, at
    assert prep.bigram_ids["not good"] in bag[1]
    assert out["y"].tolist() == [1, 0]
    assert (bag[bag >= prep.hash_base] < prep.vocab_size).all()
    assert TextFeatures.from_state(prep.state()).state() == prep.state()


def test_nb_ratios_favour_the_class_whose_texts_hold_the_id():
    # ids 0, 1: padding and out of vocabulary; id 2 in 9 of 10 positive texts and 1 of 10 negative;
    # id 3 the other way round; id 4 in as many of each.
    ratios = nb_log_ratios([[0, 0, 1, 9, 5], [0, 0, 9, 1, 5]])  # classes: negative, positive
    assert ratios.shape == (5, 2)
    assert ratios[2, 1] > 1.0 and ratios[2, 0] < -1.0 and ratios[3, 0] > 1.0 and ratios[3, 1] < -1.0
    assert ratios[4].abs().max() < 1e-6 and torch.allclose(ratios[:, 0], -ratios[:, 1])  # two classes: mirror images


def test_nb_ngram_counts_each_word_once_and_ignores_character_ngrams():
    ratios = nb_log_ratios([[0, 0, 1, 9], [0, 0, 9, 1]])
    model = NBNgram(ratios, 2, dropout=0.5).eval()
    with torch.no_grad():
        model.weight.fill_(1.0)
    once, twice = torch.tensor([[2, 0, 0, 0]]), torch.tensor([[2, 2, 0, 0]])
    with_ngrams = torch.tensor([[2, 7, 9, 0]])  # 7, 9: at or above id_limit (4), character n-grams
    assert torch.equal(model(once), model(twice)) and torch.equal(model(once), model(with_ngrams))
    assert model(once)[0].argmax() == 1 and model(torch.tensor([[3, 0, 0, 0]]))[0].argmax() == 0
    assert torch.equal(model(torch.zeros(1, 4, dtype=torch.long)), torch.zeros(1, 2))  # nothing known: the bias


@pytest.mark.parametrize("model", [BiLSTMAttention(100, 2, 8, 8, 0.5), MeanEmbedding(100, 2, 8, 0.5),
                                   NBNgram(torch.zeros(40, 2), 2, 0.5)])
def test_text_models_output_logits(model):
    x = torch.randint(0, 100, (3, 5, 4)) if model.input_column == "subwords" else torch.randint(0, 100, (3, 20))
    assert model(x).shape == (3, 2)


def test_text_requests_answer_422_for_empty_or_oversized_text():
    prep = text_features()
    prep.max_chars = 50
    task = TextTask()
    with pytest.raises(RequestError, match="text: empty text"):
        task.request_to_batch({"text": "   ", "texts": None}, prep)
    with pytest.raises(RequestError, match="texts\\[1\\]: 60 characters, more than the limit of 50"):
        task.request_to_batch({"text": None, "texts": ["fine", "x" * 60]}, prep)
    with pytest.raises(ValidationError, match="exactly one"):
        TextRequest(text="a", texts=["b"])
    assert len(task.request_to_batch({"text": None, "texts": ["a", "b"]}, prep)) == 2


def test_leave_last_out_takes_each_users_last_two_ratings():
    frame = pd.DataFrame({"user": [1, 1, 1, 1, 2, 2, 3], "item": [10, 11, 12, 13, 10, 14, 10], "t": [5, 1, 9, 7, 3, 3, 1]})
    frame[HASH_COLUMN] = stable_hash(frame[["user", "item"]], 42)
    split = assign_leave_last_out(frame, "user", "t", last_rows_per_group(frame, "user", "t"))
    assert split.tolist()[:4] == [0, 0, 2, 1]  # user 1: t=9 test, t=7 val
    assert sorted(split[4:6].tolist()) == [1, 2]  # user 2: a tie in time, broken by hash
    assert split[6] == 2  # a user with one rating: it is the test row


def test_ranking_metrics_protocol():
    scores = np.array([[0.9] + [0.1] * 100, [0.5] + [0.6] * 10 + [0.1] * 90, [0.5] + [0.6] * 9 + [0.1] * 91])
    m = ranking_metrics(scores)
    assert m["hr@10"] == pytest.approx(2 / 3)
    assert m["ndcg@10"] == pytest.approx((1.0 + 1 / np.log2(11)) / 3)


def interactions():
    catalog = pd.DataFrame({"item": [10, 11, 12, 13], "title": ["A", "B", "C", "D"], "genres": ["Comedy", "Drama|Comedy", "(no genres listed)", "Drama"]})
    prep = InteractionFeatures("u", "i", "r", n_negatives=2, eval_negatives=True, seed=1)
    prep.s = {"users": [7, 8], "items": [10, 11, 12, 13, 99], "titles": ["A", "B", "C", "D", "item 99"],
              "genre_vocab": ["Comedy", "Drama"], "item_genres": [[0], [0, 1], [], [1], []],
              "popularity": {"10": 5, "11": 1}, "item_mean_rating": {"10": 4.0}, "global_mean": 3.5,
              "history": {"7": [10, 11], "8": [12]}, "user_profiles": [[0, 0], [1.0, 0.5], [0, 0]]}
    prep._index()
    return prep, catalog


def test_interaction_features_indices_and_negatives():
    prep, _ = interactions()
    out = prep.transform(pd.DataFrame({"u": [7, 8, 5], "i": [10, 13, 99], "r": [4.0, 3.0, 1.0]}), negatives=True)
    assert out["user"].tolist() == [1, 2, 0] and out["item"].tolist() == [1, 4, 5]
    negatives = out["negatives"]
    assert negatives.shape == (3, 2)
    assert not set(negatives[0]) & {1, 2}  # never an item user 7 rated
    again = prep.transform(pd.DataFrame({"u": [7], "i": [10], "r": [4.0]}), negatives=True)["negatives"]
    assert again[0].tolist() == negatives[0].tolist()  # deterministic
    assert prep.genre_matrix()[2].tolist() == [1.0, 1.0]
    assert prep.popularity_scores().tolist() == [0, 5, 1, 0, 0, 0]  # by item index; unknown (0) and unrated items 0
    assert prep.profile_from_preferences({"Drama": 1.0, "Comedy": 1.0}).tolist() == [0.5, 0.5]
    state = InteractionFeatures.from_state(prep.state()).state()
    assert state == prep.state()


def test_recommender_models_score_pairs_and_new_users():
    prep, _ = interactions()
    neural = NeuralRecommender(prep.n_users, prep.n_items, torch.from_numpy(prep.genre_matrix()),
                               torch.tensor(prep.s["user_profiles"]), dim=4, hidden=[8], dropout=0.1, objective="rating",
                               train_negatives=4)
    user, item = torch.tensor([1, 0]), torch.tensor([1, 3])
    ratings = neural(user, item)
    assert ratings.shape == (2,) and ((ratings >= 0.5) & (ratings <= 5.0)).all()
    assert neural(torch.tensor([0]), torch.tensor([2]), torch.tensor([[1.0, 0.0]])).shape == (1,)
    mf = BiasedMF(prep.n_users, prep.n_items, 4, global_mean=3.5, objective="rating", train_negatives=4)
    assert mf(user, item).detach().numpy() == pytest.approx([3.5, 3.5], abs=0.01)


def test_recommend_request_validation():
    with pytest.raises(ValidationError, match="exactly one"):
        RecommendRequest()
    with pytest.raises(ValidationError, match="between 0 and 1"):
        RecommendRequest(genres={"Comedy": 2.0})
    with pytest.raises(ValidationError):
        RecommendRequest(user_id=1, k=0)
    assert RecommendRequest(genres={"Comedy": 1.0}, k=3).k == 3
