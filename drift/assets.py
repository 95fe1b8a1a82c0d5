"""popmon report assets served locally: small reports that still work without internet.

popmon's "online" report links plotly, jQuery and Bootstrap from public CDNs (~0.4 MB a
report); its offline report embeds them (~4.3 MB a report). tagwatch keeps the small report
and points its links at one copy of popmon's own packaged assets in ``<reports>/assets/``,
served by the drift process next to the reports and valid when the file is opened locally.
"""

from __future__ import annotations

import re
import shutil
from importlib import resources
from pathlib import Path

ASSETS_DIR = "assets"
_LINK = re.compile(r"""(?P<attr>src|href)=(?P<q>["']?)(?P<url>https://cdn\.[^"' >]+)(?P=q)""")


def packaged_assets() -> Path:
    return Path(str(resources.files("popmon") / "visualization" / "templates" / "assets"))


def _local_name(url: str, available: dict[str, str]) -> str | None:
    base = url.rsplit("/", 1)[-1]
    if base.startswith("plotly") and base.endswith(".js"):
        base = "plotly.js"  # the CDN file is versioned, popmon's packaged copy is not
    return available.get(base)


def localize_links(html: str, available: dict[str, str]) -> str:
    """Replace CDN links whose file popmon ships with ``assets/<kind>/<file>`` links."""

    def sub(m: re.Match[str]) -> str:
        local = _local_name(m.group("url"), available)
        if local is None:
            return m.group(0)
        return f'{m.group("attr")}="{ASSETS_DIR}/{local}"'

    return _LINK.sub(sub, html)


def install_assets(reports_dir: Path, source: Path | None = None) -> dict[str, str]:
    """Copy popmon's assets into ``reports_dir/assets`` (once); map file name → relative path."""
    source = source or packaged_assets()
    target = Path(reports_dir) / ASSETS_DIR
    available: dict[str, str] = {}
    for file in sorted(source.rglob("*")):
        if not file.is_file():
            continue
        rel = file.relative_to(source)
        dest = target / rel
        if not dest.is_file() or dest.stat().st_size != file.stat().st_size:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file, dest)
        available[file.name] = rel.as_posix()
    return available
