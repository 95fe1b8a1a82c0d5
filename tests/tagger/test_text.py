from __future__ import annotations

import pytest

from tagger.text import CODE_TOKEN, LINK_TOKEN, QuestionCleaner, clean_question, tokenize


@pytest.mark.parametrize(
    "tag", ["c#", "c++", ".net", "node.js", "python-3.x", "asp.net-mvc", "objective-c", "vb.net"]
)
def test_tag_shaped_words_survive(tag: str) -> None:
    assert tag in tokenize(f"Question about {tag.upper()}, please help with {tag}.")


def test_tokenize_lowercases_and_drops_punctuation() -> None:
    assert tokenize("Why does C# (and .NET 4.0) crash?!") == [
        "why",
        "does",
        "c#",
        "and",
        ".net",
        "4.0",
        "crash",
    ]
    assert tokenize("... -- ?? !!") == []
    assert tokenize("end of sentence. next-") == ["end", "of", "sentence", "next"]


def test_html_is_stripped_and_code_blocks_become_a_signal() -> None:
    body = (
        "<p>My <strong>loop</strong> fails:</p>"
        "<pre><code>for (int i = 0; i &lt; n; i++) { secretIdentifier(); }</code></pre>"
        "<p>Also <code>std::vector</code> &amp; this:</p><pre>SELECT 1</pre>"
    )
    clean = clean_question("C++ loop", body)
    assert clean.n_code_blocks == 2
    assert clean.tokens.count(CODE_TOKEN) == 2
    assert "secretidentifier" not in clean.tokens  # code is not words
    assert "vector" in clean.tokens  # inline code names are kept
    assert "strong" not in clean.tokens and "p" not in clean.tokens
    assert clean.tokens[:2] == ["c++", "loop"]


def test_links_are_counted_from_anchors_and_bare_urls() -> None:
    body = '<p>See <a href="https://a.example/x">the docs</a> or https://b.example/y.</p>'
    clean = clean_question("t", body)
    assert clean.n_links == 2
    assert clean.tokens.count(LINK_TOKEN) == 2
    assert "https" not in clean.tokens


def test_markdown_fences_count_as_code() -> None:
    clean = clean_question("t", "text\n```\nx = 1\n```\nmore")
    assert clean.n_code_blocks == 1


def test_plain_title_only() -> None:
    clean = clean_question("Node.js vs Python-3.x")
    assert clean.tokens == ["node.js", "vs", "python-3.x"]
    assert (clean.n_code_blocks, clean.n_links) == (0, 0)


def test_cleaner_is_a_pipeline_step() -> None:
    out = QuestionCleaner().fit_transform([("C# list", "<p>hi</p>"), ("java", "")])
    assert list(out) == ["c# list hi", "java"]
