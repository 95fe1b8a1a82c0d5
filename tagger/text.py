"""Text cleaning: HTML bodies, code blocks and a tokeniser that keeps tag-shaped words.

StackOverflow tags look like ``c#``, ``c++``, ``.net``, ``node.js``, ``python-3.x`` or
``asp.net-mvc``; a default word tokeniser splits them into noise, so the tokens here are
built to survive. Code blocks are not words: they become a count (a feature) and one marker
token, so the model knows "this question has code" without learning from identifiers.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

CODE_TOKEN = "__code__"
LINK_TOKEN = "__link__"

_PRE_RE = re.compile(r"<pre\b[^>]*>.*?</pre\s*>", re.IGNORECASE | re.DOTALL)
_INLINE_CODE_RE = re.compile(r"<code\b[^>]*>(.*?)</code\s*>", re.IGNORECASE | re.DOTALL)
_LINK_RE = re.compile(r"<a\b[^>]*\bhref\s*=[^>]*>", re.IGNORECASE)
_URL_RE = re.compile(r"\bhttps?://[^\s<>\"']+", re.IGNORECASE)
_TAG_RE = re.compile(r"<[^>]+>")
_MD_FENCE_RE = re.compile(r"^(```|~~~).*?^\1\s*$", re.MULTILINE | re.DOTALL)
_HTML_HINT_RE = re.compile(r"<(p|pre|code|a|br|div|ul|ol|li|h\d|blockquote|strong|em)\b", re.I)
# A token is a run of word characters and the joiners tags use (# + . -); leading dots are
# kept when a letter follows (".net"), trailing joiners other than # and + are dropped.
_TOKEN_RE = re.compile(r"\.?[a-z0-9_#+][a-z0-9_#+.\-]*")
_TRAILING = ".-"


@dataclass(frozen=True, slots=True)
class CleanText:
    """A question reduced to what the model and the monitors need."""

    tokens: list[str]
    n_code_blocks: int
    n_links: int


def tokenize(text: str) -> list[str]:
    """Lowercase and split so that tag-shaped words (c#, .net, python-3.x) stay whole."""
    out = []
    for raw in _TOKEN_RE.findall(text.lower()):
        tok = raw.rstrip(_TRAILING)
        if tok and tok != ".":
            out.append(tok)
    return out


def _strip_html(body: str) -> tuple[str, int, int]:
    counts = {"code": 0, "links": 0}

    def _marker(kind: str, token: str) -> Callable[[re.Match[str]], str]:
        def sub(_: re.Match[str]) -> str:
            counts[kind] += 1
            return f" {token} "

        return sub

    text = _PRE_RE.sub(_marker("code", CODE_TOKEN), body)
    text = _MD_FENCE_RE.sub(_marker("code", CODE_TOKEN), text)
    text = _LINK_RE.sub(_marker("links", LINK_TOKEN), text)
    # Inline <code> is usually a name worth keeping (a function, a library): keep its words.
    text = _INLINE_CODE_RE.sub(r" \1 ", text)
    text = _TAG_RE.sub(" ", text)
    text = html.unescape(text)
    text = _URL_RE.sub(_marker("links", LINK_TOKEN), text)
    return text, counts["code"], counts["links"]


def clean_question(title: str, body: str = "") -> CleanText:
    """Turn a title and an optional (HTML or plain) body into tokens and body counts."""
    tokens = tokenize(title)
    n_code = n_links = 0
    if body:
        text, n_code, n_links = _strip_html(body)
        tokens.extend(tokenize(text))
    return CleanText(tokens=tokens, n_code_blocks=n_code, n_links=n_links)


def looks_like_html(body: str) -> bool:
    return bool(_HTML_HINT_RE.search(body))


class QuestionCleaner(BaseEstimator, TransformerMixin):
    """Pipeline step: (title, body) pairs → one space-joined token string per question.

    Its output is consumed by a ``TfidfVectorizer`` whose analyzer is ``str.split``, so
    the tokens chosen here are exactly the model's vocabulary.
    """

    def fit(self, X: object, y: object = None) -> QuestionCleaner:
        return self

    def transform(self, X: Iterable[tuple[str, str]]) -> np.ndarray:
        return np.array([" ".join(clean_question(t, b).tokens) for t, b in X], dtype=object)
