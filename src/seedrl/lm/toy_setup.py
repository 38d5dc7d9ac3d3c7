"""Toy language-model setup: tokenizer, tiny models and SFT-trained policies for a toy world.

``setup_toy(world, out)`` (CLI: ``seedrl lm setup-toy --world arith --out runs/toy/arith``)
builds, all from scratch and offline:

* ``out/init/reference`` and ``out/init/teacher``: the world's tokenizer
  (:func:`~seedrl.envs.text.build_toy_assets`; deterministic, so both share one
  vocabulary) with a randomly initialised tiny GPT-2 of the ``reference`` and the
  bigger ``teacher`` size (:data:`SIZES`);
* ``out/reference`` and ``out/teacher``: those models after SFT on the world's
  examples (:func:`seedrl.agents.sft.train_sft`; runs, metrics and curves in
  ``out/sft/<role>``), loadable with ``LMPolicy.from_pretrained``; each holds a
  ``seedrl_toy.json`` naming the world and its options (``seedrl bon`` reads it);
* ``out/nli`` (facts only): a tiny NLI classifier trained from scratch on the world's
  (document, summary) pairs (:func:`seedrl.lm.toy_nli.train_toy_nli`), loadable by
  ``NLIReward.from_pretrained``; its held-out accuracy in ``out/nli_eval.json``;
* ``out/toy.json``: world, options, seed, sizes, paths and the final held-out
  loss / greedy reward of each model (and the NLI accuracy).

The facts world is set up with hallucinating references (``hallucination_rate: 0.25`` in
:data:`DEFAULT_OPTIONS`; see :class:`~seedrl.envs.text.toy.FactsWorld`), the premise of
RL from entailment feedback: the SFT reference learns to add the world's "well-known"
fact about famous animals, a hallucination the exact checker reports.

The reference is the smaller model; the teacher has more capacity and is meant to score
higher (for distillation; see facts below). Default world options (:data:`DEFAULT_OPTIONS`) keep
the tasks within reach of a tiny model trained for a few minutes on a CPU. Measured with
seed 0 (greedy, 100 held-out prompts):

* arithmetic (exact match): reference 0.28, teacher 0.47 (about 3 CPU-minutes in all);
  the reference is imperfect on purpose (room for Best-of-N and RL). Without dropout
  (``--size '{"reference": {"dropout": 0}}'``) the same reference reaches 0.65.
* facts (fact F1): reference 1.00 (0.998 sampling at temperature 1), teacher 0.41
  (``seedrl lm setup-toy --world facts``: 40 minutes wall, 36 CPU-minutes, on a shared
  2-core machine under load 4-5; about 3 + 5 minutes when lightly loaded). The teacher's
  copying forms at a run-dependent step: the same recipe at one torch thread reached 0.97
  (seed 0) and 0.99 (seed 1), this run only 0.41, so the facts teacher is not reliably
  above the reference. The reference is near-perfect: for one with room for Best-of-N
  and RL, stop it earlier (below).
* facts with hallucinating references (``hallucination_rate: 0.25``, the default since
  entailment feedback): reference F1 0.972, hallucination rate 0.195 (greedy and at
  temperature 1; the held-out references' own rate; reproduced by a retrain: F1 0.972),
  NLI held-out accuracy 0.947 (DeBERTa with silent negatives; the earlier BERT: 0.909 in
  about 4 minutes at one thread, lightly loaded). At load ~20 on 2 cores: NLI 41 minutes,
  reference 13 minutes with one torch thread (``OMP_NUM_THREADS=1``; hours with two).
  The F1 1.00 figures here and below were measured with clean references.

Why the facts reference used to be weak (F1 0.02 with GPT-2's default dropout 0.1 and
1500 steps): a summary copies the document's facts, which needs an induction-like
copying circuit, and dropout 0.1 in a 64-wide 2-layer model kept it from forming: it
learned the fact grammar and which fact comes next, copied colours and relations, but
filled in animals and objects from their marginal distribution, so nearly every sentence
held one wrong word. More steps alone did not help (3000 steps with dropout: F1 0.04),
nor did the 128-wide 4-layer teacher (0.36-0.40; 0.17 after 3000 steps without dropout at
lr 2e-3: bigger learned slower). Without dropout the circuit appears after 1000-2000
steps, abruptly and at a seed-dependent step (F1 0.43 after 1500 steps with seed 0, 0.07
after 2000 with seed 1), and after 3000 steps the 2-layer
reference reached F1 1.00 / 0.96 / 1.00 with seeds 0 / 1 / 2 (0.94-1.00 when sampling at
temperature 1), the 96-wide 3-layer teacher 0.97 and 0.99 (0.41 in the run above). Hence facts: dropout 0 (:data:`SIZES`)
and 3000 steps (:data:`TRAINING`). For an imperfect facts reference, stop it earlier
(``--steps 1500``: seed-dependent). Pass ``sizes`` / ``training`` (CLI ``--size``,
``--steps``) to trade time for quality.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from seedrl.errors import UserError

ALIASES = {"arith": "arithmetic", "arithmetic": "arithmetic", "facts": "facts"}
TOY_FILE = "seedrl_toy.json"

#: GPT-2 sizes per world and role (keyword arguments of build_toy_assets) and ``dropout``
#: (residual, embedding and attention). GPT-2's default dropout 0.1 keeps a tiny model
#: from learning to copy facts (see the module docstring), so the facts models have none.
SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "arithmetic": {"reference": {"n_embd": 64, "n_layer": 2, "n_head": 4, "dropout": 0.1},
                   "teacher": {"n_embd": 128, "n_layer": 4, "n_head": 4, "dropout": 0.1}},
    "facts": {"reference": {"n_embd": 64, "n_layer": 2, "n_head": 4, "dropout": 0.0},
              "teacher": {"n_embd": 96, "n_layer": 3, "n_head": 4, "dropout": 0.0}},
}
_DROPOUTS = ("resid_pdrop", "embd_pdrop", "attn_pdrop")
#: World options used by setup-toy (the world's own defaults where empty).
DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {
    "arithmetic": {"ops": ["add", "sub", "copy", "reverse", "sort"], "max_digits": 2, "min_len": 2, "max_len": 5},
    "facts": {"min_facts": 1, "max_facts": 3, "max_fillers": 1, "hallucination_rate": 0.25},
}
#: SFT settings per world and role (steps, batch size, learning rate).
TRAINING: dict[str, dict[str, dict[str, Any]]] = {
    "arithmetic": {"reference": {"steps": 1500, "batch_size": 32, "optim.lr": 3e-3},
                   "teacher": {"steps": 2500, "batch_size": 32, "optim.lr": 2e-3}},
    "facts": {"reference": {"steps": 3000, "batch_size": 16, "optim.lr": 3e-3},
              "teacher": {"steps": 3000, "batch_size": 16, "optim.lr": 3e-3}},
}
REWARD = {"arithmetic": "exact", "facts": "f1"}


def world_name(name: str) -> str:
    """Canonical world name of ``name`` (``arith`` -> ``arithmetic``)."""
    if name not in ALIASES:
        raise UserError(f"world={name!r}: expected one of {sorted(ALIASES)}")
    return ALIASES[name]


def make_world(name: str, options: Mapping[str, Any] | None = None):
    """A toy world instance from its name (or alias) and constructor options."""
    from seedrl.envs.text.toy import WORLDS

    cls = WORLDS[world_name(name)]
    try:
        return cls(**dict(options or {}))
    except (TypeError, ValueError) as err:
        raise UserError(f"world {name!r}: bad world_options {dict(options or {})!r}: {err}") from None


def set_dropout(model_dir: str | Path, p: float) -> None:
    """Set a saved GPT-2's residual, embedding and attention dropout to ``p`` (its config.json)."""
    path = Path(model_dir) / "config.json"
    config = json.loads(path.read_text())
    config.update({k: float(p) for k in _DROPOUTS})
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def read_toy_info(model_dir: str | Path) -> dict | None:
    """The ``seedrl_toy.json`` of a model directory (world and options), or None."""
    path = Path(model_dir) / TOY_FILE
    return json.loads(path.read_text()) if path.is_file() else None


@dataclass
class ToySetup:
    """Paths and results of :func:`setup_toy`."""

    out: str
    world: str
    world_options: dict
    tokenizer: str
    reference: str
    teacher: str | None
    init: dict = field(default_factory=dict)  # role -> untrained model dir
    runs: dict = field(default_factory=dict)  # role -> SFT run dir
    evals: dict = field(default_factory=dict)  # role -> last eval row
    nli: str | None = None  # facts: the NLI classifier's directory
    nli_eval: dict = field(default_factory=dict)  # its held-out accuracy

    def describe(self) -> str:
        lines = [f"toy world {self.world!r} in {self.out}", f"  tokenizer:  {self.tokenizer}"]
        for role in ("reference", "teacher"):
            path = getattr(self, role)
            if path:
                ev = self.evals.get(role, {})
                score = ", ".join(f"{k} {v:.3f}" for k, v in ev.items() if k.startswith("eval_"))
                lines.append(f"  {role + ':':<11} {path}  ({score})  SFT run: {self.runs[role]}")
        if self.nli:
            lines.append(f"  {'nli:':<11} {self.nli}  (held-out accuracy {self.nli_eval.get('accuracy', float('nan')):.3f})")
        return "\n".join(lines)


def setup_toy(
    world: str, out: str | Path, *, seed: int = 0, teacher: bool = True, world_options: Mapping | None = None,
    sizes: Mapping[str, Mapping[str, int]] | None = None, training: Mapping[str, Mapping[str, Any]] | None = None,
    num_examples: int = 20000, eval_examples: int = 200, eval_prompts: int = 100, corpus_size: int = 2000,
    progress: bool = True, overwrite: bool = False, nli: Mapping[str, Any] | bool = True,
) -> ToySetup:
    """Build the tokenizer and tiny models for ``world`` and SFT a reference (and a teacher).

    ``sizes`` / ``training`` override :data:`SIZES` / :data:`TRAINING` per role (any
    :class:`~seedrl.agents.sft.SFTConfig` key in ``training``, dotted: ``{"optim.lr": 1e-3}``).
    ``nli`` (facts): False skips the NLI classifier; a mapping overrides
    :class:`~seedrl.lm.toy_nli.NLIConfig` fields (``{"steps": 500}``).
    """
    from seedrl.agents.sft import SFTConfig, train_sft
    from seedrl.config import load_config
    from seedrl.envs.text import build_toy_assets

    name = world_name(world)
    options = dict(DEFAULT_OPTIONS[name] if world_options is None else world_options)
    make_world(name, options)  # validate early
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty; pass overwrite=True (--overwrite) or choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    roles = ["reference"] + (["teacher"] if teacher else [])
    result = ToySetup(str(out), name, options, "", "", None)
    if name == "facts" and nli is not False:
        from seedrl.lm.toy_nli import NLIConfig, train_toy_nli

        nli_cfg = NLIConfig(**(nli if isinstance(nli, Mapping) else {}))
        result.nli_eval = train_toy_nli(make_world(name, options), out / "nli", seed=seed, config=nli_cfg,
                                        progress=progress)
        result.nli = str(out / "nli")
    for role in roles:
        size = {**SIZES[name][role], **dict((sizes or {}).get(role, {}))}
        init = out / "init" / role
        arch = {k: v for k, v in size.items() if k != "dropout"}
        assets = build_toy_assets(init, name, seed=seed, corpus_size=corpus_size, **arch)
        set_dropout(init, size["dropout"])
        result.tokenizer = result.tokenizer or assets.tokenizer_path
        train = {**TRAINING[name][role], **dict((training or {}).get(role, {}))}
        base = {"model": str(init), "name": role, "out_dir": str(out / "sft"), "seed": seed,
                "data": {"world": name, "world_options": options, "num_examples": num_examples,
                         "eval_examples": eval_examples, "seed": seed, "reward": REWARD[name]},
                "eval_prompts": eval_prompts, "eval_every": 500, "max_completion_tokens": 64,
                "optim": {"warmup_steps": 50}, "log": {"progress": progress}}
        cfg = load_config(SFTConfig, base, [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in train.items()])
        res = train_sft(cfg)
        final = out / role
        shutil.copytree(res.final_dir, final)
        info = {"world": name, "world_options": options, "role": role, "seed": seed, "size": size,
                "reward": REWARD[name]}
        (final / TOY_FILE).write_text(json.dumps(info, indent=1))
        setattr(result, role, str(final))
        result.init[role], result.runs[role] = str(init), str(res.run_dir)
        result.evals[role] = res.last_eval or {}
    (out / "toy.json").write_text(json.dumps(asdict(result), indent=1))
    return result
