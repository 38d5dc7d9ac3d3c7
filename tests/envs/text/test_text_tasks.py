import json

import numpy as np
import pytest

from seedrl.data import DatasetWriter, open_dataset
from seedrl.envs.text import (
    ArithmeticWorld,
    ChatTemplate,
    FactsWorld,
    TemplateError,
    TextTask,
    completion_spec,
    completion_step,
)
from seedrl.envs.text.tasks import PromptTooLong

ROWS = [{"q": f"{i}+{i}=", "answer": str(2 * i), "n": i} for i in range(23)]


def drain(task, n):
    return [(p.index, p.epoch) for p in task.next_batch(n)]


# ------------------------------------------------------------------- loading
def test_all_sources_give_the_same_prompts(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    jsonl = tmp_path / "data.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n\n")
    (tmp_path / "array.json").write_text(json.dumps(ROWS))
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "data.parquet")
    ds = datasets.Dataset.from_list(ROWS)
    ds.save_to_disk(tmp_path / "saved")
    datasets.DatasetDict({"train": ds, "test": ds.select(range(3))}).save_to_disk(tmp_path / "dd")
    tasks = [
        TextTask(ROWS, "{q}", seed=3),
        TextTask.from_jsonl(jsonl, "{q}", seed=3),
        TextTask.from_jsonl(tmp_path / "array.json", "{q}", seed=3),
        TextTask.from_parquet(tmp_path / "data.parquet", "{q}", seed=3),
        TextTask.from_hf(ds, "{q}", seed=3),
        TextTask.from_hf(tmp_path / "saved", "{q}", seed=3),
        TextTask.from_hf(tmp_path / "dd", "{q}", split="train", seed=3),
    ]
    streams = [[(p.text, p.example) for p in t.next_batch(30)] for t in tasks]
    for s in streams[1:]:
        assert s == streams[0]
    assert tasks[1].name == "data.jsonl"
    with pytest.raises(ValueError, match=r"splits \['train', 'test'\]; pass split="):
        TextTask.from_hf(tmp_path / "dd", "{q}")
    with pytest.raises(ValueError, match="no split 'dev'"):
        TextTask.from_hf(tmp_path / "dd", "{q}", split="dev")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"q": 1}\n{"q": \n')
    with pytest.raises(ValueError, match="line 2 is not valid JSON"):
        TextTask.from_jsonl(bad, "{q}")
    with pytest.raises(TemplateError, match=r"needs field 'document'.*\['answer', 'n', 'q'\]"):
        TextTask(ROWS, "Summarize: {document}")
    with pytest.raises(ValueError, match="no examples"):
        TextTask([], "{q}")


# ------------------------------------------------------- order and resumption
def test_epochs_are_permutations_and_seeded():
    task = TextTask(ROWS, "{q}", seed=7)
    seen = drain(task, 23 * 3)
    for e in range(3):
        idx = [i for i, ep in seen if ep == e]
        assert sorted(idx) == list(range(23))  # every example exactly once per epoch
    orders = [[i for i, ep in seen if ep == e] for e in range(3)]
    assert orders[0] != orders[1] != orders[2]  # reshuffled each epoch
    assert drain(TextTask(ROWS, "{q}", seed=7), 69) == seen
    assert drain(TextTask(ROWS, "{q}", seed=8), 69) != seen
    assert [i for i, _ in drain(TextTask(ROWS, "{q}", shuffle=False), 25)] == list(range(23)) + [0, 1]


@pytest.mark.parametrize("cut", [0, 1, 22, 23, 24, 40])
def test_resume_neither_skips_nor_repeats(cut):
    straight = TextTask(ROWS, "{q}", seed=1)
    full = drain(straight, 60)
    first = TextTask(ROWS, "{q}", seed=1)
    head = drain(first, cut)
    state = json.loads(json.dumps(first.state_dict()))  # survives a checkpoint file
    resumed = TextTask(ROWS, "{q}", seed=1)
    resumed.load_state_dict(state)
    assert head + drain(resumed, 60 - cut) == full
    assert resumed.state_dict() == straight.state_dict()


def test_state_mismatch_is_refused():
    task = TextTask(ROWS, "{q}", seed=1)
    drain(task, 5)
    state = task.state_dict()
    with pytest.raises(ValueError, match="state seed=1 but this task has seed=2"):
        TextTask(ROWS, "{q}", seed=2).load_state_dict(state)
    with pytest.raises(ValueError, match="num_examples=23 but this task has num_examples=22"):
        TextTask(ROWS[:22], "{q}", seed=1).load_state_dict(state)


def test_too_long_prompts_error_or_skip(facts_tokenizer):
    world = FactsWorld(min_facts=1, max_facts=4)
    ex = world.examples(40, seed=0)
    lengths = [len(facts_tokenizer(e["prompt"])["input_ids"]) for e in ex]
    limit = int(np.median(lengths))
    strict = TextTask(ex, "{prompt}", tokenizer=facts_tokenizer, max_prompt_tokens=limit, shuffle=False)
    first_long = next(i for i, n in enumerate(lengths) if n > limit)
    with pytest.raises(PromptTooLong, match=rf"example {first_long}: prompt has {lengths[first_long]} tokens, more than max_prompt_tokens={limit}"):
        strict.next_batch(first_long + 1)
    skip = TextTask(ex, "{prompt}", tokenizer=facts_tokenizer, max_prompt_tokens=limit, too_long="skip", seed=4)
    got = skip.next_batch(10)
    assert all(len(p.tokens) <= limit for p in got)
    kept = [i for i in skip.order(0) if lengths[i] <= limit][:10]
    assert [p.index for p in got] == kept
    assert skip.state_dict()["skipped"] == sum(lengths[i] > limit for i in skip.order(0)[: skip.position])
    with pytest.raises(ValueError, match="every example is longer"):
        TextTask(ex, "{prompt}", tokenizer=facts_tokenizer, max_prompt_tokens=3, too_long="skip").next_prompt()
    with pytest.raises(ValueError, match="needs a tokenizer"):
        TextTask(ex, "{prompt}", max_prompt_tokens=3)


def test_prompt_tokens_plain_and_chat(facts_tokenizer):
    ex = FactsWorld().examples(3, seed=1)
    plain = TextTask(ex, "Summarize:\n{document}\nSummary:", tokenizer=facts_tokenizer, shuffle=False)
    p = plain.next_prompt()
    assert p.text == ex[0]["prompt"] and not p.chat
    assert p.tokens == facts_tokenizer(p.text)["input_ids"] and p.tokens[0] == facts_tokenizer.bos_token_id
    chat = TextTask(ex, ChatTemplate("Summarize:\n{document}"), tokenizer=facts_tokenizer, shuffle=False)
    c = chat.next_prompt()
    assert c.chat and c.text.startswith("<bos><|user|>Summarize:") and c.text.endswith("<|assistant|>")
    assert c.tokens.count(facts_tokenizer.bos_token_id) == 1
    # without a tokenizer: text only
    assert TextTask(ex, "{document}").next_prompt().tokens is None


# ------------------------------------------------------------------- episodes
def test_single_turn_episode_steps():
    ex = ArithmeticWorld(ops=("add",)).examples(2, seed=0)
    task = TextTask(ex, "{prompt}", shuffle=False)
    ep = task.next_episodes(1)[0]
    assert ep.prompt_text == ex[0]["prompt"]
    assert ep.step(ex[0]["answer"], completion_tokens=[5, 6], reward=1.0, prompt_tokens=[1, 2, 3]) is True
    (step,) = ep.to_steps()
    assert step["is_first"] and step["is_last"] and step["is_terminal"] and step["discount"] == 0.0
    assert step["observation"]["prompt"] == ex[0]["prompt"] and step["action"]["completion"] == ex[0]["answer"]
    assert step["observation"]["prompt_tokens"].tolist() == [1, 2, 3] and step["reward"] == np.float32(1.0)
    with pytest.raises(RuntimeError, match="finished"):
        ep.step("again")


def test_multi_turn_episode_plain_and_chat(facts_tokenizer):
    ex = [{"document": "the red fox lives in the forest."}]

    def env_fn(episode, completion):
        n = len(episode.turns)
        return ("the sky was clear.", 0.5) if n < 3 else None  # replies twice, then ends

    plain = TextTask(ex, "{document}", env_fn=env_fn, max_turns=5, continuation="\n{user}\n")
    ep = plain.next_episodes(1)[0]
    assert not ep.step(" the fox.")
    assert ep.prompt_text == "the red fox lives in the forest. the fox.\nthe sky was clear.\n"
    assert not ep.step("ok")
    assert ep.step("done", reward=2.0)
    assert ep.terminal and [t.reward for t in ep.turns] == [0.5, 0.5, 2.0]
    steps = ep.to_steps()
    assert [(s["is_first"], s["is_last"], s["is_terminal"]) for s in steps] == [
        (True, False, False), (False, False, False), (False, True, True)]
    assert [s["discount"] for s in steps] == [1.0, 1.0, 0.0]
    assert [m["role"] for m in ep.messages] == ["user", "assistant", "user", "assistant", "user", "assistant"]

    chat = TextTask(ex, ChatTemplate("{document}"), tokenizer=facts_tokenizer, env_fn=env_fn, max_turns=2)
    ep = chat.next_episodes(1)[0]
    ep.step(" the red fox.")
    assert ep.prompt_text == (
        "<bos><|user|>the red fox lives in the forest.\n<|assistant|> the red fox.<eos>\n"
        "<|user|>the sky was clear.\n<|assistant|>"
    )
    assert ep.prompt_tokens == facts_tokenizer(ep.prompt_text, add_special_tokens=False)["input_ids"]
    assert ep.step("more") and not ep.terminal  # max_turns=2 reached while env wanted to go on: truncated
    last = ep.to_steps()[-1]
    assert last["is_last"] and not last["is_terminal"] and last["discount"] == 1.0


# ---------------------------------------------------- trajectory store round trip
def test_completion_steps_round_trip_through_the_store(tmp_path, facts_tokenizer):
    world = FactsWorld()
    ex = world.examples(6, seed=2)
    task = TextTask(ex, world.template, tokenizer=facts_tokenizer, seed=0)
    reward = world.reward_fn("f1")
    episodes = []
    for p in task.next_batch(6):
        completion = p.example["reference"] if p.index % 2 else " the gray owl eats nuts."
        tokens = facts_tokenizer(completion, add_special_tokens=False)["input_ids"]
        r = reward([p.text], [completion], [p.example])[0]
        logp = np.linspace(-1, 0, len(tokens), dtype=np.float32)
        step = completion_step(p.text, p.tokens, completion, tokens, r,
                               {"behaviour_log_probs": logp, "example_id": p.example["id"]})
        episodes.append((step, {"index": p.index}))
    spec = completion_spec(episodes[0][0])
    assert spec.field("observation/prompt_tokens").shape == (None,)
    assert spec.field("action/completion_tokens").dtype == "int32"
    assert spec.field("behaviour_log_probs").shape == (None,)
    with DatasetWriter(tmp_path / "store", spec) as w:
        for step, meta in episodes:
            w.write_episode([step], metadata=meta)
    ds = open_dataset(tmp_path / "store")
    assert len(ds) == 6
    for ep, (step, meta) in zip(ds, episodes):
        got = ep[0]
        assert ep.metadata["index"] == meta["index"] and len(ep) == 1
        assert got["observation"]["prompt"] == step["observation"]["prompt"]
        np.testing.assert_array_equal(got["observation"]["prompt_tokens"], step["observation"]["prompt_tokens"])
        np.testing.assert_array_equal(got["action"]["completion_tokens"], step["action"]["completion_tokens"])
        np.testing.assert_array_equal(got["behaviour_log_probs"], step["behaviour_log_probs"])
        assert got["action"]["completion"] == step["action"]["completion"]
        assert got["reward"] == step["reward"] and got["is_terminal"] and got["example_id"] == step["example_id"]
        assert facts_tokenizer.decode(got["action"]["completion_tokens"]) == got["action"]["completion"]
    rewards = sorted(float(ep[0]["reward"]) for ep in ds)
    assert rewards[-1] == 1.0 and rewards[0] == 0.0  # references are perfect, the owl is invented


def test_completion_step_validation():
    with pytest.raises(ValueError, match="field 'observation/prompt_tokens': token ids must be 1-D"):
        completion_step("p", [[1, 2]], "c", [3], 0.0)
    with pytest.raises(ValueError, match="field 'action/completion_tokens': token ids must be integers"):
        completion_step("p", [1], "c", [0.5], 0.0)
    with pytest.raises(ValueError, match="out of range"):
        completion_step("p", [-1], "c", [3], 0.0)
    with pytest.raises(ValueError, match="metadata key 'reward' clashes"):
        completion_step("p", [1], "c", [3], 0.0, {"reward": 1})
    with pytest.raises(TypeError, match="field 'reward'"):
        completion_step("p", [1], "c", [3], "high")
    with pytest.raises(TypeError, match="field 'action/completion': expected str"):
        completion_step("p", [1], b"c", [3], 0.0)
    s = completion_step("p", None, "c", np.array([3], np.int64), 1)
    assert s["observation"]["prompt_tokens"].dtype == np.int32 and s["observation"]["prompt_tokens"].size == 0
