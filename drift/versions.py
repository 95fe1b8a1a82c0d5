"""Each model version is judged against its own baseline.

Rows carry the version that served them. After a promotion the drift job judges the version
served now (``models/LATEST``, which the predictor keeps on the registry's champion) against
that version's ``baseline.csv``; a retrained model's baseline is the features of its held-out
recent slice, so it is not red merely for being judged against 2011 questions. Rows served by
another known version (its artefact is in ``models/``) are left out: they belong to a
different model and a different baseline. Rows of a version with no artefact here (written by
a benchmark, or before versions were recorded) cannot be told apart and stay in.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from tagger.artefact import MODEL_FILE

log = logging.getLogger(__name__)


def rows_of_version(df: pd.DataFrame, version: str, models_dir: Path) -> pd.DataFrame:
    """The rows the served ``version`` is judged on (see the module docstring)."""
    if "model_version" not in df.columns or df.empty:
        return df
    versions = df["model_version"].astype(str)
    others = {v for v in versions.unique() if v != version}
    known = {v for v in others if (Path(models_dir) / v / MODEL_FILE).is_file()}
    if not known:
        return df
    keep = ~versions.isin(known)
    log.info(
        "%d of %d rows served by other model version(s) %s: not judged against %s's baseline",
        int((~keep).sum()),
        len(df),
        ", ".join(sorted(known)),
        version,
    )
    return df.loc[keep]
