import numpy as np
import pytest
import torch
from tiny_classifiers import BagOfWords, BagOfWordsConfig
from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2ForSequenceClassification,
)

from seedrl.rewards import CombinedReward, NLIReward, RewardModel

PROMPTS = ["the fox", "a", "the red bird eats seeds", "it was a quiet day", "sky", "the cat", "good"]
COMPLETIONS = ["lives in the forest", "good good", "", "bad", "was clear it was a quiet day", "eats fish", "a"]


@pytest.fixture(scope="module")
def bert_rm_path(tmp_path_factory, nli_tokenizer):
    torch.manual_seed(1)
    cfg = BertConfig(
        vocab_size=len(nli_tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=32, num_labels=1,
    )
    path = tmp_path_factory.mktemp("bert_rm")
    BertForSequenceClassification(cfg).save_pretrained(path)
    nli_tokenizer.save_pretrained(path)
    return path


def direct_scores(model, tokenizer, prompts, completions):
    out = []
    with torch.no_grad():
        for p, c in zip(prompts, completions):
            enc = tokenizer(p, c, return_tensors="pt")
            out.append(model(**enc).logits[0, 0].item())
    return np.array(out)


def test_bert_reward_model_matches_one_by_one_forward(bert_rm_path, nli_tokenizer):
    rm = RewardModel.from_pretrained(bert_rm_path, batch_size=3)
    assert rm.name == bert_rm_path.name and rm.max_length == 32
    r = rm(PROMPTS, COMPLETIONS)
    assert r.dtype == np.float32 and r.shape == (7,)
    model = AutoModelForSequenceClassification.from_pretrained(bert_rm_path).eval()
    np.testing.assert_allclose(r, direct_scores(model, nli_tokenizer, PROMPTS, COMPLETIONS), atol=1e-5)
    # batch size (and so padding and length-sorting) does not change any score
    np.testing.assert_allclose(RewardModel.from_pretrained(bert_rm_path, batch_size=1)(PROMPTS, COMPLETIONS), r, atol=1e-5)
    assert len(set(np.round(r, 5))) > 3  # random init: the scores do depend on the text
    # shift/scale normalisation
    norm = RewardModel.from_pretrained(bert_rm_path, shift=0.25, scale=4.0)(PROMPTS, COMPLETIONS)
    np.testing.assert_allclose(norm, (r - 0.25) * 4.0, atol=1e-4)


def test_known_head_bias(tmp_path, nli_tokenizer):
    cfg = BertConfig(vocab_size=len(nli_tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=32, num_labels=1)
    model = BertForSequenceClassification(cfg)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.fill_(-0.75)
    rm = RewardModel(model, nli_tokenizer, input_format="concat")
    np.testing.assert_array_equal(rm(PROMPTS, COMPLETIONS), np.full(7, -0.75, np.float32))


def count_model_path(tmp, tokenizer, word="good", max_len=32):
    cfg = BagOfWordsConfig(vocab_size=len(tokenizer), mode="count", target_id=tokenizer.convert_tokens_to_ids(word),
                           num_labels=1, max_position_embeddings=max_len)
    BagOfWords(cfg).save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    return tmp


def test_truncation_side_keeps_the_end(tmp_path, nli_tokenizer):
    path = count_model_path(tmp_path, nli_tokenizer)
    prompt = " ".join(["good"] * 10 + ["filler"] * 20)
    completion = "filler good good"
    # single text: 30 + 3 words + [CLS] [SEP] = 35 > max_length 12
    left = RewardModel.from_pretrained(path, input_format="concat", max_length=12, truncation_side="left")
    right = RewardModel.from_pretrained(path, input_format="concat", max_length=12, truncation_side="right")
    full = RewardModel.from_pretrained(path, input_format="concat")
    text_prompt = prompt + " "
    assert left([text_prompt], [completion])[0] == 2.0  # the end: "... filler filler good good"
    assert right([text_prompt], [completion])[0] == 10.0  # the start: 10 x good
    # the default budget (32) keeps 30 of the 33 words from the end: the completion's 2 + 7 of the 10 prompt goods
    assert full([text_prompt], [completion])[0] == 9.0
    # callable input format, with example fields
    fmt = RewardModel.from_pretrained(path, input_format=lambda p, c, e: e["extra"] + " " + c)
    assert fmt(["x"], ["good"], [{"extra": "good good"}])[0] == 3.0
    with pytest.raises(ValueError, match="truncation_side='middle'"):
        RewardModel.from_pretrained(path, truncation_side="middle")
    with pytest.raises(ValueError, match="max_length=100 exceeds the model's limit of 32"):
        RewardModel.from_pretrained(path, max_length=100)


def test_decoder_reward_model_pads_correctly(tmp_path, tmp_path_factory):
    from seedrl.envs.text import build_toy_assets

    assets = build_toy_assets(tmp_path_factory.mktemp("toy"), "facts", seed=0)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(assets.path, num_labels=1)
    assert isinstance(model, GPT2ForSequenceClassification)
    model.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(assets.path)
    tok.save_pretrained(tmp_path)
    prompts = ["Summarize:\nthe red fox lives in the forest.\nSummary:"] * 3 + ["Summarize:\nthe sky was clear.\nSummary:"]
    comps = [" the red fox lives in the forest.", " the red fox.", "", " the gray owl eats seeds. the sky was clear."]
    batched = RewardModel.from_pretrained(tmp_path, input_format="concat", batch_size=4)(prompts, comps)
    single = RewardModel.from_pretrained(tmp_path, input_format="concat", batch_size=1)(prompts, comps)
    np.testing.assert_allclose(batched, single, atol=1e-5)
    model.eval()
    with torch.no_grad():
        want = [model(**tok(p + c, return_tensors="pt")).logits[0, 0].item() for p, c in zip(prompts, comps)]
    np.testing.assert_allclose(batched, want, atol=1e-5)


def test_errors_name_the_problem(tmp_path, overlap_nli_path, nli_tokenizer):
    with pytest.raises(ValueError, match=r"one output \(num_labels=1\), got num_labels=3.*NLIReward"):
        RewardModel.from_pretrained(overlap_nli_path)
    with pytest.raises(FileNotFoundError, match="no model at path"):
        RewardModel.from_pretrained(str(tmp_path / "missing" / "model"))
    # a GPT-2 style tokenizer without a pad token
    cfg = GPT2Config(vocab_size=len(nli_tokenizer), n_positions=32, n_embd=16, n_layer=1, n_head=2, num_labels=1)
    model = GPT2ForSequenceClassification(cfg)
    tok = nli_tokenizer.__class__.from_pretrained(overlap_nli_path)
    tok.pad_token = None
    with pytest.raises(ValueError, match="has no pad token.*pad_token="):
        RewardModel(model, tok)
    rm = RewardModel(model, tok, pad_token="[SEP]")
    assert rm(["a b", "a"], ["c", "c d e"]).shape == (2,)
    assert model.config.pad_token_id == tok.convert_tokens_to_ids("[SEP]")


def test_combined_with_model_rewards(overlap_nli_path, bert_rm_path):
    nli = NLIReward.from_pretrained(overlap_nli_path, output="prob")
    rm = RewardModel.from_pretrained(bert_rm_path)
    comb = CombinedReward([(nli, 2.0), (rm, -0.5)])
    ex = [{"document": "the red fox lives in the forest"}] * 2
    r = comb(["p", "p"], ["red fox", "blue bird"], ex)
    np.testing.assert_allclose(r, 2.0 * nli(["p", "p"], ["red fox", "blue bird"], ex) - 0.5 * rm(["p", "p"], ["red fox", "blue bird"]), atol=1e-6)
    _, parts = comb.breakdown(["p", "p"], ["red fox", "blue bird"], ex)
    assert set(parts) == {overlap_nli_path.name, bert_rm_path.name}
