"""Text tasks: a seeded, resumable stream of prompts, and conversations.

A :class:`TextTask` holds examples (dicts of fields) from a list, a JSONL
file, a Parquet file or a Hugging Face ``datasets.Dataset`` / saved dataset
directory (accessed by index, not copied), and a template that renders an
example's fields into prompt text (:mod:`seedrl.envs.text.templates`).

Order. Epoch ``e`` visits the examples in the order
``default_rng(SeedSequence([seed, e])).permutation(N)`` (identity when
``shuffle=False``); the stream runs through epoch 0, then 1, ... The state is
just ``(epoch, position)``: :meth:`TextTask.state_dict` /
:meth:`TextTask.load_state_dict` resume the stream exactly where it stopped,
so a resumed run neither skips nor repeats a prompt, and every epoch visits
every example exactly once. Examples whose prompt exceeds
``max_prompt_tokens`` raise (``too_long="error"``) or are skipped
(``"skip"``, deterministically, counted in ``state_dict()["skipped"]``).

Episodes. ``task.start_episode(prompt)`` returns a :class:`TextEpisode`
holding the conversation. ``episode.step(completion, ...)`` records the
assistant turn and asks the environment callback
``env_fn(episode, completion) -> str | None | (str | None, reward)`` for the
next user message; ``None`` (or no ``env_fn``: single turn) ends the episode
(terminal). Reaching ``max_turns`` ends it truncated. ``episode.to_steps()``
gives one RLDS step per turn (:mod:`seedrl.envs.text.steps`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from seedrl.envs.text.steps import completion_step
from seedrl.errors import UserError
from seedrl.envs.text.templates import (
    ChatTemplate,
    PromptTemplate,
    TemplateError,
    as_template,
    encode_prompt,
    render_messages,
    uses_chat,
)

STATE_VERSION = 1
TOO_LONG = ("error", "skip")

__all__ = ["TaskDataError", "TextEpisode", "TextPrompt", "TextTask", "load_examples"]


# --------------------------------------------------------------------- loading
def _read_jsonl(path: str) -> list[dict]:
    """JSON lines (one object per line); a ``.json`` file may instead hold one array of objects."""
    if path.endswith(".json"):
        with open(path, encoding="utf-8") as f:
            head = f.read(4096).lstrip()
        if head.startswith("["):
            with open(path, encoding="utf-8") as f:
                rows = json.load(f)
            for n, row in enumerate(rows):
                if not isinstance(row, dict):
                    raise TaskDataError(f"{path}: item {n} is a {type(row).__name__}, expected a JSON object")
            return rows
    rows = _Rows()
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise TaskDataError(f"{path}: line {n} is not valid JSON: {e}") from None
            if not isinstance(row, dict):
                raise TaskDataError(f"{path}: line {n} holds a {type(row).__name__}, expected a JSON object")
            rows.append(row)
            rows.lines.append(n)
    return rows


class _Rows(list):
    """Examples of a JSON-lines file; ``lines[i]`` is the file line of example ``i`` (for errors)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[int] = []


class TaskDataError(UserError):
    """An example of a text task cannot be used (empty prompt, bad JSON line); the message names the line."""


def _hf_split(ds: Any, split: str | None, where: str) -> Any:
    if hasattr(ds, "keys") and not hasattr(ds, "column_names") or type(ds).__name__ == "DatasetDict":
        splits = list(ds.keys())
        if split is None:
            if len(splits) == 1:
                return ds[splits[0]]
            raise TaskDataError(f"{where} has splits {splits}; pass split=")
        if split not in splits:
            raise TaskDataError(f"{where}: no split {split!r}; splits are {splits}")
        return ds[split]
    return ds


def load_examples(source: Any, *, split: str | None = None, columns: Sequence[str] | None = None) -> Sequence[Mapping]:
    """Examples from a list of dicts, ``.jsonl``, ``.parquet``, a ``datasets`` object or a saved dataset dir.

    A string that is not an existing file or directory is passed to
    ``datasets.load_dataset`` (hub or builder name; ``split`` applies).
    """
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if os.path.isfile(path):
            if path.endswith((".jsonl", ".json")):
                rows = _read_jsonl(path)
                if not columns:
                    return rows
                picked = _Rows()
                picked.extend({k: r[k] for k in columns} for r in rows)
                picked.lines = list(getattr(rows, "lines", []))
                return picked
            if path.endswith(".parquet"):
                import pyarrow.parquet as pq

                return pq.read_table(path, columns=list(columns) if columns else None).to_pylist()
            raise TaskDataError(f"{path}: unknown file type (expected .jsonl, .json or .parquet)")
        looks_like_a_file = path.endswith((".jsonl", ".json", ".parquet")) or path.startswith((".", "/", "~"))
        if looks_like_a_file and not os.path.exists(path):
            raise TaskDataError(f"examples file {path!r} does not exist")
        import datasets  # lazy: only for Hugging Face sources

        if os.path.isdir(path):
            ds = _hf_split(datasets.load_from_disk(path), split, path)
        else:
            ds = datasets.load_dataset(path, split=split)
            ds = _hf_split(ds, split, path)
        return ds.select_columns(list(columns)) if columns else ds
    if hasattr(source, "column_names") or type(source).__name__ == "DatasetDict":
        ds = _hf_split(source, split, type(source).__name__)
        return ds.select_columns(list(columns)) if columns else ds
    if isinstance(source, Sequence):
        for i, row in enumerate(source[:1]):
            if not isinstance(row, Mapping):
                raise TypeError(f"example {i} is a {type(row).__name__}, expected a dict of fields")
        return source
    raise TypeError(f"cannot read examples from a {type(source).__name__}")


# --------------------------------------------------------------------- prompts
@dataclass(frozen=True)
class TextPrompt:
    """One drawn prompt: its text, tokens (None without a tokenizer) and origin."""

    text: str
    tokens: list[int] | None
    example: dict
    index: int  # position in the dataset
    epoch: int
    chat: bool = False  # rendered by the tokenizer's chat template
    messages: tuple = ()  # the chat messages it was rendered from (chat templates)


class TextTask:
    """A deterministic, resumable stream of prompts over examples (see the module docstring)."""

    def __init__(
        self, examples: Any, template: Any = "{prompt}", *, tokenizer: Any = None, seed: int = 0,
        shuffle: bool = True, max_prompt_tokens: int | None = None, too_long: str = "error",
        add_special_tokens: bool = True, env_fn: Callable | None = None, max_turns: int = 1,
        continuation: str = "\n{user}\n", split: str | None = None, name: str | None = None,
    ) -> None:
        self.examples = load_examples(examples, split=split)
        self.num_examples = len(self.examples)
        if self.num_examples == 0:
            where = os.fspath(examples) if isinstance(examples, (str, os.PathLike)) else "TextTask"
            raise TaskDataError(f"{where}: no examples")
        if too_long not in TOO_LONG:
            raise ValueError(f"too_long={too_long!r}: expected one of {TOO_LONG}")
        if max_prompt_tokens is not None and tokenizer is None:
            raise ValueError("max_prompt_tokens needs a tokenizer to count tokens")
        if max_turns < 1:
            raise ValueError(f"max_turns={max_turns}: must be >= 1")
        self.template, self.tokenizer = as_template(template), tokenizer
        self.seed, self.shuffle = int(seed), bool(shuffle)
        self.max_prompt_tokens, self.too_long, self.add_special_tokens = max_prompt_tokens, too_long, add_special_tokens
        self.env_fn, self.max_turns = env_fn, int(max_turns if env_fn is not None else 1)
        self.continuation = PromptTemplate(continuation)
        self.name = name or (os.path.basename(os.fspath(examples)) if isinstance(examples, (str, os.PathLike)) else "task")
        self.epoch, self.position, self.skipped = 0, 0, 0
        self._order: tuple[int, np.ndarray] | None = None
        self.source = os.fspath(examples) if isinstance(examples, (str, os.PathLike)) else None
        self.check_examples()

    def where(self, index: int) -> str:
        """Where example ``index`` comes from, for errors: ``file: line n`` (JSON lines), else its row."""
        lines = getattr(self.examples, "lines", None)
        if self.source is not None:
            return f"{self.source}: line {lines[index]}" if lines else f"{self.source}: row {index}"
        return f"task {self.name!r}: example {index}"

    def check_examples(self) -> None:
        """One pass over every example before any is drawn: each has the template's fields, and a
        string template renders it to a non-empty prompt. Raises naming the line (or row)."""
        fields = getattr(self.template, "fields", ())
        renders = isinstance(self.template, PromptTemplate)
        for i in range(self.num_examples):
            ex = self.examples[i]
            missing = [f for f in fields if f not in ex]
            if missing:
                raise TemplateError(f"{self.where(i)}: the template needs field {missing[0]!r}, which this "
                                    f"example lacks; its fields are {sorted(ex)}")
            if renders and not self.template.render(ex, i).strip():
                raise TaskDataError(f"{self.where(i)}: empty prompt (template {self.template.template!r} "
                                    f"renders this example to {self.template.render(ex, i)!r})")

    @classmethod
    def from_jsonl(cls, path, template="{prompt}", **kw) -> TextTask:
        return cls(os.fspath(path), template, **kw)

    from_parquet = from_jsonl

    @classmethod
    def from_hf(cls, dataset_or_path, template="{prompt}", *, split=None, **kw) -> TextTask:
        return cls(dataset_or_path, template, split=split, **kw)

    def __len__(self) -> int:
        return self.num_examples

    def example(self, index: int) -> dict:
        return dict(self.examples[int(index)])

    # ------------------------------------------------------------- rendering
    @property
    def chat(self) -> bool:
        return uses_chat(self.template, self.tokenizer)

    def render(self, example: Mapping, index: int | None = None) -> str:
        t = self.template
        if isinstance(t, ChatTemplate):
            return t.render(example, index, self.tokenizer)
        if isinstance(t, PromptTemplate):
            return t.render(example, index)
        text = t(example)
        if not isinstance(text, str):
            raise TypeError(f"template callable returned {type(text).__name__} for example {index}, expected str")
        return text

    def encode(self, text: str, chat: bool | None = None) -> list[int]:
        if self.tokenizer is None:
            raise ValueError("TextTask has no tokenizer; pass tokenizer= to get prompt tokens")
        return encode_prompt(text, self.tokenizer, chat=self.chat if chat is None else chat,
                             add_special_tokens=self.add_special_tokens)

    def prompt(self, index: int, epoch: int = 0) -> TextPrompt:
        """The prompt of example ``index`` (raises if longer than ``max_prompt_tokens``)."""
        ex = self.example(index)
        text = self.render(ex, index)
        tokens = self.encode(text) if self.tokenizer is not None else None
        if self.max_prompt_tokens is not None and len(tokens) > self.max_prompt_tokens:
            raise PromptTooLong(
                f"task {self.name!r}: example {index}: prompt has {len(tokens)} tokens, more than "
                f"max_prompt_tokens={self.max_prompt_tokens} (too_long='skip' skips such examples)"
            )
        messages = tuple(self.template.messages(ex, index)) if isinstance(self.template, ChatTemplate) else ()
        return TextPrompt(text, tokens, ex, int(index), int(epoch), self.chat, messages)

    # --------------------------------------------------------------- ordering
    def order(self, epoch: int) -> np.ndarray:
        """The example indices of ``epoch`` in visiting order."""
        if self._order is None or self._order[0] != epoch:
            if self.shuffle:
                perm = np.random.default_rng(np.random.SeedSequence([self.seed, epoch])).permutation(self.num_examples)
            else:
                perm = np.arange(self.num_examples)
            self._order = (epoch, perm)
        return self._order[1]

    def next_prompt(self) -> TextPrompt:
        skipped_run = 0
        while True:
            index = int(self.order(self.epoch)[self.position])
            epoch = self.epoch
            self.position += 1
            if self.position == self.num_examples:
                self.epoch, self.position = self.epoch + 1, 0
            try:
                return self.prompt(index, epoch)
            except PromptTooLong:
                if self.too_long == "error":
                    raise
                self.skipped += 1
                skipped_run += 1
                if skipped_run >= self.num_examples:
                    raise TaskDataError(
                        f"task {self.name!r}: every example is longer than max_prompt_tokens={self.max_prompt_tokens}"
                    ) from None

    def next_batch(self, n: int) -> list[TextPrompt]:
        """The next ``n`` prompts of the stream (crossing epochs as needed)."""
        return [self.next_prompt() for _ in range(int(n))]

    def __iter__(self) -> Iterator[TextPrompt]:
        while True:
            yield self.next_prompt()

    def state_dict(self) -> dict:
        return {
            "version": STATE_VERSION, "seed": self.seed, "shuffle": self.shuffle, "num_examples": self.num_examples,
            "epoch": self.epoch, "position": self.position, "skipped": self.skipped,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume the stream; the dataset and seed must be those the state was saved with."""
        for key in ("seed", "shuffle", "num_examples"):
            if key in state and state[key] != getattr(self, key):
                raise TaskDataError(
                    f"task {self.name!r}: state {key}={state[key]!r} but this task has {key}={getattr(self, key)!r}; "
                    "resuming would visit different prompts"
                )
        position = int(state["position"])
        if not 0 <= position < self.num_examples:
            raise TaskDataError(f"task {self.name!r}: state position={position} outside [0, {self.num_examples})")
        self.epoch, self.position, self.skipped = int(state["epoch"]), position, int(state.get("skipped", 0))

    # --------------------------------------------------------------- episodes
    def start_episode(self, prompt: TextPrompt) -> TextEpisode:
        if prompt.messages:
            messages = [dict(m) for m in prompt.messages]
        else:
            messages = [{"role": "user", "content": prompt.text}]
        return TextEpisode(self, prompt, messages)

    def next_episodes(self, n: int) -> list[TextEpisode]:
        return [self.start_episode(p) for p in self.next_batch(n)]


class PromptTooLong(UserError):
    """A prompt has more tokens than ``max_prompt_tokens``."""


@dataclass
class Turn:
    prompt_text: str
    prompt_tokens: list[int] | None
    completion_text: str
    completion_tokens: Any
    reward: float
    metadata: dict


@dataclass
class TextEpisode:
    """A conversation in progress: messages so far, one :class:`Turn` per completion.

    ``prompt_text`` is the text the policy continues next: turn 0 is the
    task's rendered prompt; later turns are the whole conversation through the
    tokenizer's chat template when the task uses one, else the previous prompt
    + completion + ``continuation.format(user=next_message)``.
    """

    task: TextTask = field(repr=False)
    prompt: TextPrompt
    messages: list[dict]
    turns: list[Turn] = field(default_factory=list)
    done: bool = False
    terminal: bool = False
    _next_text: str | None = None

    @property
    def example(self) -> dict:
        return self.prompt.example

    @property
    def prompt_text(self) -> str:
        if not self.turns:
            return self.prompt.text
        return self._next_text  # type: ignore[return-value]

    @property
    def prompt_tokens(self) -> list[int] | None:
        if not self.turns:
            return self.prompt.tokens
        return self.task.encode(self.prompt_text) if self.task.tokenizer is not None else None

    def step(self, completion: str, *, completion_tokens: Any = None, reward: float = 0.0,
             metadata: Mapping[str, Any] | None = None, prompt_tokens: Any = None) -> bool:
        """Record an assistant turn; returns whether the episode is over."""
        if self.done:
            raise RuntimeError("step() on a finished TextEpisode")
        if prompt_tokens is None:
            prompt_tokens = self.prompt_tokens
        turn = Turn(self.prompt_text, prompt_tokens, completion, completion_tokens, float(reward), dict(metadata or {}))
        self.turns.append(turn)
        self.messages.append({"role": "assistant", "content": completion})
        reply = self.task.env_fn(self, completion) if self.task.env_fn is not None else None
        if isinstance(reply, tuple):
            reply, extra = reply
            turn.reward += float(extra)
        if reply is None:
            self.done = self.terminal = True
        elif len(self.turns) >= self.task.max_turns:
            self.done = True  # truncated: the environment wanted to go on
        else:
            if not isinstance(reply, str):
                raise TypeError(f"env_fn returned {type(reply).__name__}, expected str, None or (str|None, reward)")
            self.messages.append({"role": "user", "content": reply})
            if self.task.chat:
                self._next_text = render_messages(self.messages, self.task.tokenizer)
            else:
                self._next_text = turn.prompt_text + completion + self.task.continuation.render({"user": reply})
        return self.done

    def to_steps(self, rewards: Sequence[float] | None = None) -> list[dict]:
        """One RLDS step per turn (``rewards`` overrides the recorded per-turn rewards)."""
        if rewards is not None and len(rewards) != len(self.turns):
            raise ValueError(f"rewards has {len(rewards)} entries for {len(self.turns)} turns")
        steps = []
        for t, turn in enumerate(self.turns):
            last = self.done and t == len(self.turns) - 1
            steps.append(completion_step(
                turn.prompt_text, turn.prompt_tokens, turn.completion_text, turn.completion_tokens,
                turn.reward if rewards is None else rewards[t], turn.metadata,
                is_first=t == 0, is_last=last, is_terminal=last and self.terminal,
            ))
        return steps
