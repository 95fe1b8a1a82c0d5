"""What the model measures of each question: names shared by the model and the store.

Kept free of heavy imports: the store, its CLI and the drift job's readers need the column names
without loading scikit-learn (~1.5 s).
"""

from __future__ import annotations

NO_TAG = "(none)"
FEATURE_COLUMNS = (
    "title_chars",
    "body_chars",
    "n_code_blocks",
    "n_links",
    "n_tokens",
    "oov_ratio",
    "n_predicted_tags",
    "max_score",
    "top_tag",
)
