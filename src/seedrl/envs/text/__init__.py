"""Text environments: prompts are observations, completions are actions.

* :class:`TextTask` / :class:`TextPrompt` / :class:`TextEpisode`
  (``seedrl.envs.text.tasks``): examples from JSONL / Parquet / Hugging Face
  datasets, a seeded resumable prompt stream, single- and multi-turn episodes;
* :class:`PromptTemplate` / :class:`ChatTemplate` (``seedrl.envs.text.templates``);
* :func:`completion_step` / :func:`completion_spec` (``seedrl.envs.text.steps``):
  completions as RLDS steps for the trajectory store;
* toy worlds with exact ground truth, :class:`FactsWorld` and
  :class:`ArithmeticWorld` (``seedrl.envs.text.toy``), and
  :func:`build_toy_assets` (``seedrl.envs.text.assets``): a tokenizer and tiny
  GPT-2 / T5 for a world, saved for ``from_pretrained``.
"""

from seedrl.envs.text.steps import TOKEN_PATHS, completion_spec, completion_step
from seedrl.envs.text.tasks import TextEpisode, TextPrompt, TextTask, load_examples
from seedrl.envs.text.templates import (
    ChatTemplate,
    PromptTemplate,
    TemplateError,
    render_messages,
)
from seedrl.envs.text.toy import (
    WORLDS,
    ArithmeticWorld,
    FactScore,
    FactsWorld,
    get_world,
)


def __getattr__(name: str):
    if name in ("build_toy_assets", "build_toy_tokenizer", "ToyAssets"):
        from seedrl.envs.text import assets

        return getattr(assets, name)
    raise AttributeError(f"module 'seedrl.envs.text' has no attribute {name!r}")


__all__ = [
    "TOKEN_PATHS",
    "WORLDS",
    "ArithmeticWorld",
    "ChatTemplate",
    "FactScore",
    "FactsWorld",
    "PromptTemplate",
    "TemplateError",
    "TextEpisode",
    "TextPrompt",
    "TextTask",
    "ToyAssets",
    "build_toy_assets",
    "build_toy_tokenizer",
    "completion_spec",
    "completion_step",
    "get_world",
    "load_examples",
    "render_messages",
]
