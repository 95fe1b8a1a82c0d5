"""Every curl example of the README's predictor section runs against a real gunicorn predictor."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.exporter.test_gunicorn import serve


def readme_commands() -> list[str]:
    """The shell commands of the first ``sh`` block that uses curl (with their continuations)."""
    text = (REPO_ROOT / "README.md").read_text()
    block = next(b for b in re.findall(r"```sh\n(.*?)```", text, re.DOTALL) if "curl" in b)
    commands, current = [], ""
    for line in block.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line + "\n"
        if not line.endswith("\\") and current.count("'") % 2 == 0:
            commands.append(current.strip())
            current = ""
    return commands


@pytest.mark.slow
def test_readme_curl_examples_work(
    models_dir: Path, tmp_path: Path, free_port: Callable[[], int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the predictor and the README's curl read the API token from the same file, and the
    # feedback token (written by start_predictor; feedback needs it: token mode)
    (tmp_path / "api_token").write_text("readme-api-token-0123456789\n")
    monkeypatch.setenv("TAGWATCH_API_TOKEN_FILE", str(tmp_path / "api_token"))
    monkeypatch.setenv("TAGWATCH_FEEDBACK_TOKEN_FILE", str(tmp_path / "secrets" / "feedback_token"))
    commands = readme_commands()
    assert len(commands) >= 8 and all("localhost:8000" in c for c in commands if "curl" in c)
    port = free_port()
    with serve(models_dir, tmp_path, port, TAGWATCH_FEEDBACK_AUTH="token"):
        script = "set -euo pipefail\n" + "\n".join(
            f"echo '>>>'; {c.replace('localhost:8000', f'127.0.0.1:{port}')}" for c in commands
        )
        out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    outputs = [o.strip() for o in out.stdout.split(">>>")[1:]]
    assert len(outputs) == len(commands)
    predicted = json.loads(outputs[0])
    assert "python" in predicted["tags"]
    feedback = json.loads(outputs[2])
    assert set(feedback) == {"coverage", "jaccard"}
    stored = json.loads(outputs[3])
    assert stored["title"] == "Sort a dict by value in python"
    assert stored["feedback"]["tags"] == ["python", "sorting", "dictionary"]
    assert json.loads(outputs[4]) == {"status": "ok"}
    assert json.loads(outputs[5])["status"] == "ready"
    assert "tagwatch_predictions_total" in outputs[6]
    assert json.loads(outputs[7]) == {"error": "title must not be empty", "status": 400,
                                      "field": "title"}  # fmt: skip
