import math

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, GPT2ForSequenceClassification

import lm_gym
from lm_gym import rewards as R


def call(reward, completions, prompts=None, references=None):
    prompts = prompts or ["p"] * len(completions)
    references = references or [()] * len(completions)
    return list(R.score(reward, prompts, completions, references))


def test_sentiment_orders_positive_above_negative():
    values = call(lm_gym.make_reward("sentiment"), [" truly great and fun", " boring and awful", " long"])
    assert values[0] > 0.5 and values[1] < -0.5 and values[2] == 0.0
    with_prompt = lm_gym.SentimentReward(include_prompt=True)
    assert call(with_prompt, [" ."], prompts=["the movie was great"])[0] > 0.5


def test_classifier_reward_is_the_label_probability_of_the_model(classifier_dir):
    texts = [" great fun", " a very boring and long film"]
    reward = lm_gym.make_reward("classifier", model=classifier_dir, device="cpu")
    tokenizer = AutoTokenizer.from_pretrained(classifier_dir)
    model = GPT2ForSequenceClassification.from_pretrained(classifier_dir).eval()
    with torch.no_grad():
        expected = [model(**tokenizer(t, return_tensors="pt")).logits.softmax(-1)[0, 1].item() for t in texts]
    np.testing.assert_allclose(call(reward, texts), expected, rtol=1e-4)
    logits = call(lm_gym.ClassifierReward(classifier_dir, label="NEGATIVE", output="logit", device="cpu"), texts)
    with torch.no_grad():
        expected = [model(**tokenizer(t, return_tensors="pt")).logits[0, 0].item() for t in texts]
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="label='happy'.*NEGATIVE"):
        lm_gym.ClassifierReward(classifier_dir, label="happy")


def test_classifier_reward_needs_a_model_argument():
    with pytest.raises(TypeError, match="reward='classifier'.*model"):
        lm_gym.make_reward("classifier")


def test_keyword_and_regex():
    keyword = lm_gym.make_reward("keyword", keywords=["great", "fun"])
    assert call(keyword, [" Great and fun", " great", " greatness", " dull"]) == [1.0, 0.5, 0.0, 0.0]
    regex = lm_gym.make_reward("regex", pattern=r"\bi loved it\b")
    assert call(regex, [" . i loved it .", " i loved items"]) == [1.0, 0.0]
    with pytest.raises(ValueError, match="keywords"):
        lm_gym.KeywordReward("great")


def test_length_reward_peaks_at_the_target():
    reward = lm_gym.make_reward("length", target=4)
    assert call(reward, [" a b c d", " a b", " a b c d e f g h", ""]) == [0.0, -0.5, -1.0, -1.0]
    with pytest.raises(ValueError, match="target"):
        lm_gym.LengthReward(target=0)


def test_rouge_and_bleu_compare_with_references():
    refs = [("the acting was great",), ("the acting was great", "a fine film")]
    rouge = lm_gym.make_reward("rouge")
    bleu = lm_gym.make_reward("bleu")
    assert call(rouge, ["the acting was great", "a fine film"], references=refs) == pytest.approx([1.0, 1.0])
    assert call(rouge, ["nothing alike here"], references=refs[:1]) == [0.0]
    assert call(bleu, ["the acting was great"], references=refs[:1]) == pytest.approx([1.0])
    assert call(bleu, ["zzz"], references=refs[:1])[0] < 0.1
    with pytest.raises(RuntimeError, match="needs references"):
        call(rouge, ["text"])


def test_target_word_has_its_optimum_at_one():
    reward = lm_gym.make_reward("target_word", target="great")
    assert call(reward, [" great great", " great . ", " great fun", " dull", ""]) == [1.0, 1.0, 0.5, 0.0, 0.0]


def test_make_reward_accepts_instances_and_callables_and_rejects_the_rest():
    instance = lm_gym.LengthReward(3)
    assert lm_gym.make_reward(instance) is instance
    wrapped = lm_gym.make_reward(lambda p, c: 2.0)
    assert isinstance(wrapped, lm_gym.FunctionReward) and call(wrapped, ["x"]) == [2.0]
    with pytest.raises(ValueError, match="reward_kwargs"):
        lm_gym.make_reward(instance, target=3)
    with pytest.raises(TypeError, match="reward=42"):
        lm_gym.make_reward(42)


def test_register_reward_adds_a_name_without_silently_replacing_one():
    lm_gym.register_reward("exclamations", lambda: lm_gym.FunctionReward(lambda p, c: c.count("!")))
    try:
        env = lm_gym.TextGenEnv(reward="exclamations", prompts=["x"])
        assert call(env.reward, ["wow!!"]) == [2.0]
        with pytest.raises(ValueError, match="already registered"):
            lm_gym.register_reward("exclamations", lm_gym.LengthReward)
    finally:
        del R.REWARDS["exclamations"]


def test_score_checks_what_a_reward_returns():
    class Short(lm_gym.Reward):
        name = "short"

        def __call__(self, prompts, completions, references):
            return [1.0]

    with pytest.raises(ValueError, match="returned 1 scores for 2"):
        call(Short(), ["a", "b"])
    with pytest.raises(ValueError, match="returned inf"):
        call(lm_gym.make_reward(lambda p, c: math.inf), ["a"])
    with pytest.raises(RuntimeError, match="raised ZeroDivisionError"):
        call(lm_gym.make_reward(lambda p, c: 1 / 0), ["a"])
