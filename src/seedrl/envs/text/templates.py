"""Prompt templates: an example's fields -> the prompt text a policy sees.

* :class:`PromptTemplate`: a Python format string over the example's fields,
  e.g. ``"Summarize:\\n{document}\\nSummary:"``. ``{{`` / ``}}`` are literal
  braces; ``{a[b]}`` / ``{a.b}`` index into a field as in ``str.format``.
* :class:`ChatTemplate`: a system + user template building chat messages
  ``[{"role": "system", ...}, {"role": "user", ...}]``, rendered with the
  tokenizer's own chat template (``tokenizer.apply_chat_template(messages,
  tokenize=False, add_generation_prompt=True)``) when it has one. Without one
  (or without a tokenizer) the plain fallback is used: ``system + "\\n\\n" +
  user`` for one turn, and for a conversation one ``"{role}: {content}"``
  line per message followed by ``"assistant:"``; ``require_chat_template=True``
  makes that case an error instead.

Chat-rendered text already holds the model's special tokens, so it must be
encoded with ``add_special_tokens=False`` (:func:`encode_prompt` does so).
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from seedrl.errors import UserError

__all__ = ["ChatTemplate", "PromptTemplate", "TemplateError", "as_template", "encode_prompt", "render_messages"]


class TemplateError(UserError, KeyError):
    """A template refers to a field the example does not have (or is malformed)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class PromptTemplate:
    """``template.format(**example)`` with errors naming the missing field."""

    def __init__(self, template: str, *, name: str | None = None) -> None:
        if not isinstance(template, str):
            raise TypeError(f"PromptTemplate: template must be a str, got {type(template).__name__}")
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as e:
            raise TemplateError(f"template {template!r:.80} is malformed: {e}") from None
        fields = []
        for _, field, _, _ in parsed:
            if field is None:
                continue
            root = field.split(".", 1)[0].split("[", 1)[0]
            if not root or root.isdigit():
                raise TemplateError(f"template {template!r:.80}: positional field {{{field}}}; use field names")
            if root not in fields:
                fields.append(root)
        self.template, self.name, self.fields = template, name, tuple(fields)

    def render(self, example: Mapping[str, Any], index: int | None = None) -> str:
        missing = [f for f in self.fields if f not in example]
        if missing:
            where = f"example {index}" if index is not None else "example"
            raise TemplateError(
                f"template {self.template!r:.60} needs field {missing[0]!r}, which {where} lacks; "
                f"its fields are {sorted(example)}"
            )
        return self.template.format_map(example)

    __call__ = render

    def __repr__(self) -> str:
        return f"PromptTemplate({self.template!r})"


def _template(t: str | PromptTemplate | None) -> PromptTemplate | None:
    return t if t is None or isinstance(t, PromptTemplate) else PromptTemplate(t)


def render_messages(messages: Sequence[Mapping[str, str]], tokenizer: Any = None, *, require: bool = False,
                    add_generation_prompt: bool = True) -> str:
    """A conversation as prompt text: the tokenizer's chat template, or the plain fallback."""
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [dict(m) for m in messages], tokenize=False, add_generation_prompt=add_generation_prompt
        )
    if require:
        raise ValueError(
            "require_chat_template=True but "
            + ("no tokenizer was given" if tokenizer is None else f"tokenizer {type(tokenizer).__name__} has no chat_template")
        )
    roles = [m["role"] for m in messages]
    if roles in (["user"], ["system", "user"]):
        return "\n\n".join(m["content"] for m in messages)
    lines = [f"{m['role']}: {m['content']}" for m in messages]
    return "\n".join(lines + (["assistant:"] if add_generation_prompt else []))


class ChatTemplate:
    """System + user templates rendered through the tokenizer's chat template."""

    def __init__(self, user: str | PromptTemplate, system: str | PromptTemplate | None = None, *,
                 require_chat_template: bool = False) -> None:
        self.user, self.system = _template(user), _template(system)
        self.require_chat_template = bool(require_chat_template)

    @property
    def fields(self) -> tuple[str, ...]:
        fs = list(self.system.fields) if self.system else []
        return tuple(fs + [f for f in self.user.fields if f not in fs])

    def messages(self, example: Mapping[str, Any], index: int | None = None) -> list[dict[str, str]]:
        out = []
        if self.system is not None:
            out.append({"role": "system", "content": self.system.render(example, index)})
        out.append({"role": "user", "content": self.user.render(example, index)})
        return out

    def render(self, example: Mapping[str, Any], index: int | None = None, tokenizer: Any = None) -> str:
        return render_messages(self.messages(example, index), tokenizer, require=self.require_chat_template)

    def __repr__(self) -> str:
        return f"ChatTemplate(user={self.user!r}, system={self.system!r})"


def as_template(t: Any) -> PromptTemplate | ChatTemplate | Callable:
    """str -> PromptTemplate; templates and callables ``(example) -> str`` as they are."""
    if isinstance(t, str):
        return PromptTemplate(t)
    if isinstance(t, (PromptTemplate, ChatTemplate)) or callable(t):
        return t
    raise TypeError(f"template must be a str, PromptTemplate, ChatTemplate or callable, got {type(t).__name__}")


def uses_chat(template: Any, tokenizer: Any) -> bool:
    """Whether ``template`` renders through the tokenizer's chat template."""
    return isinstance(template, ChatTemplate) and tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))


def encode_prompt(text: str, tokenizer: Any, *, chat: bool, add_special_tokens: bool = True) -> list[int]:
    """Token ids of a prompt: chat-rendered text is encoded without adding special tokens again."""
    return list(tokenizer(text, add_special_tokens=add_special_tokens and not chat)["input_ids"])
