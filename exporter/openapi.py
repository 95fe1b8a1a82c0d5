"""The published API description (``exporter/openapi.yaml``), served at ``/openapi.json``."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import yaml


@cache
def load_openapi() -> dict[str, Any]:
    text = resources.files("exporter").joinpath("openapi.yaml").read_text(encoding="utf-8")
    spec: dict[str, Any] = yaml.safe_load(text)
    return spec
