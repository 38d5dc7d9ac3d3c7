"""``benchmarks/rlef_alpha_sweep.py --merge``: per-seed sweeps combined into means and ranges."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "rlef_alpha_sweep.py"


@pytest.fixture(scope="module")
def sweep():
    spec = importlib.util.spec_from_file_location("rlef_alpha_sweep", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def result(seed, rows, sft_halluc=0.25):
    return {"config": "c.yaml", "eval_prompts": 200, "eval_seed": 12345, "nli_model": "nli", "seed": seed,
            "overrides": [f"seed={seed}"], "load_average": [1.0, 1.0, 1.0],
            "sft": {"hallucination_rate": sft_halluc, "length_words": 13.0},
            "rows": [{"alpha": a, "train_s": 1.0, "eval": ev} for a, ev in rows]}


def test_merge_means_ranges_and_seed_rows(sweep):
    a = result(0, [(0.1, {"hallucination_rate": 0.1, "length_words": 12.0, "example": "x"}),
                   (0.3, {"hallucination_rate": 0.2, "length_words": 13.0})])
    b = result(1, [(0.1, {"hallucination_rate": 0.3, "length_words": 10.0, "example": "y"}),
                   (0.03, {"hallucination_rate": 0.0, "length_words": 4.0})])
    out = sweep.merge([a, b])
    assert [r["alpha"] for r in out["rows"]] == [0.03, 0.1, 0.3]
    row = out["rows"][1]
    assert row["num_seeds"] == 2 and [s["seed"] for s in row["seeds"]] == [0, 1]
    assert row["eval"] == pytest.approx({"hallucination_rate": 0.2, "length_words": 11.0})  # text fields dropped
    assert row["eval_min"] == {"hallucination_rate": 0.1, "length_words": 10.0}
    assert row["eval_max"] == {"hallucination_rate": 0.3, "length_words": 12.0}
    assert out["rows"][0]["num_seeds"] == 1 and out["rows"][0]["eval"]["length_words"] == 4.0
    assert out["seeds"] == [0, 1] and out["sft"] == a["sft"]


def test_merge_refuses_different_sweeps(sweep):
    a = result(0, [(0.1, {"hallucination_rate": 0.1})])
    with pytest.raises(ValueError, match="eval_seed=1"):
        sweep.merge([a, {**result(1, []), "eval_seed": 1}])
    with pytest.raises(ValueError, match="SFT evaluations differ"):
        sweep.merge([a, result(1, [], sft_halluc=0.3)])
    with pytest.raises(ValueError, match="no results"):
        sweep.merge([])


def test_exact_metrics_count_degenerate_summaries(sweep):
    """degenerate = neither entailed nor hallucinating: the empty summary and repetitions count,
    a faithful summary (also a copied filler) and a hallucinating one do not."""
    from seedrl.envs.text import FactsWorld

    world = FactsWorld(1, 3, 1)
    doc = {"document": "the red fox eats seeds. the sky was clear. the blue owl likes the rain."}
    texts = ["the red fox eats seeds. the blue owl likes the rain.",  # entailed
             "the red fox eats seeds. the sky was clear.",  # entailed (a document sentence)
             "the red fox eats seeds. the gray cat eats nuts.",  # hallucinates
             "the red fox eats the eats the eats eats",  # degenerate: the repetition hack
             "the red fox eats seeds. the blue owl likes",  # degenerate: cut off mid-sentence
             ""]  # degenerate: says nothing
    out = sweep.exact_metrics(world, texts, [doc] * len(texts))
    assert out["degenerate_rate"] == pytest.approx(3 / 6)
    assert out["fact_coverage"] == pytest.approx((1 + 0.5 + 0.5 + 0 + 0.5 + 0) / 6)
    assert out["faithfulness"] == pytest.approx((1 + 0.5 + 0.5 + 0 + 0.5 + 0) / 6)  # a filler counts as said, unsupported
