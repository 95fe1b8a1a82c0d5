"""Each version is judged against its own baseline: rows of other known versions are left out."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from drift.versions import rows_of_version


def test_rows_of_other_known_versions_are_left_out(tmp_path: Path) -> None:
    for version in ("v1", "v2"):
        (tmp_path / version).mkdir()
        (tmp_path / version / "model.joblib").write_bytes(b"x")
    df = pd.DataFrame({"seq": range(6), "model_version": ["v1", "v1", "v2", "v2", "bench", "v2"]})
    mine = rows_of_version(df, "v2", tmp_path)
    # v1 has an artefact here: a different model and baseline; "bench" cannot be told apart
    assert mine["seq"].tolist() == [2, 3, 4, 5]
    assert rows_of_version(df, "v1", tmp_path)["seq"].tolist() == [0, 1, 4]
    assert rows_of_version(df.drop(columns="model_version"), "v2", tmp_path).equals(
        df.drop(columns="model_version")
    )
