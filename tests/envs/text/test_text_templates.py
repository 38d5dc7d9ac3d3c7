import pytest

from seedrl.envs.text import (
    ChatTemplate,
    PromptTemplate,
    TemplateError,
    render_messages,
)
from seedrl.envs.text.templates import encode_prompt


def test_prompt_template_renders_and_names_missing_field():
    t = PromptTemplate("Summarize:\n{document}\nSummary ({meta[lang]}) {{raw}}:")
    assert t.fields == ("document", "meta")
    assert t.render({"document": "the fox.", "meta": {"lang": "en"}}) == "Summarize:\nthe fox.\nSummary (en) {raw}:"
    with pytest.raises(TemplateError, match=r"needs field 'document', which example 7 lacks; its fields are \['doc', 'meta'\]"):
        t.render({"doc": "x", "meta": {}}, index=7)
    with pytest.raises(TemplateError, match="positional field"):
        PromptTemplate("{} and {0}")
    with pytest.raises(TemplateError, match="malformed"):
        PromptTemplate("{unclosed")


def test_chat_template_uses_tokenizer_template(facts_tokenizer):
    chat = ChatTemplate("Summarize:\n{document}", system="the sky was {style}.")
    ex = {"document": "the red fox lives in the forest.", "style": "clear"}
    assert chat.fields == ("style", "document")
    assert chat.messages(ex) == [
        {"role": "system", "content": "the sky was clear."},
        {"role": "user", "content": "Summarize:\nthe red fox lives in the forest."},
    ]
    text = chat.render(ex, tokenizer=facts_tokenizer)
    assert text == (
        "<bos><|system|>the sky was clear.\n<|user|>Summarize:\nthe red fox lives in the forest.\n<|assistant|>"
    )
    # encoded without a second <bos>, every piece in the world's vocabulary
    ids = encode_prompt(text, facts_tokenizer, chat=True)
    assert ids[0] == facts_tokenizer.bos_token_id and ids.count(facts_tokenizer.bos_token_id) == 1
    assert facts_tokenizer.unk_token_id not in ids
    assert facts_tokenizer.decode(ids) == text


def test_chat_template_fallback_without_tokenizer_template():
    chat = ChatTemplate("Q: {q}", system="Be exact.")
    assert chat.render({"q": "1+1"}) == "Be exact.\n\nQ: 1+1"
    assert ChatTemplate("Q: {q}").render({"q": "1+1"}) == "Q: 1+1"
    with pytest.raises(ValueError, match="require_chat_template=True but no tokenizer"):
        ChatTemplate("Q: {q}", require_chat_template=True).render({"q": "x"})
    convo = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "2+2="}]
    assert render_messages(convo) == "user: hi\nassistant: hello\nuser: 2+2=\nassistant:"
