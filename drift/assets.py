"""popmon report assets served locally: small reports that still work without internet.

popmon's "online" report links plotly, jQuery and Bootstrap from public CDNs (~0.4 MB a
report); its offline report embeds them (~4.3 MB a report). tagwatch keeps the small report
and points its links at one copy of popmon's own packaged assets in ``<reports>/assets/``,
served by the drift process next to the reports and valid when the file is opened locally.

plotly.js is the exception: popmon packages plotly.js 2.12, but popmon draws its figures with
the installed Python plotly, which (from plotly.py 6) writes arrays base64-encoded (``bdata``)
that only plotly.js >= 2.28 reads. The report therefore links the plotly.js that the Python
plotly package ships for its own HTML output (``plotly/package_data/plotly.min.js``), the one
version that matches the figures; its file name carries the version so that a browser never
mixes a cached old copy with a new report.
"""

from __future__ import annotations

import re
import shutil
from importlib import resources
from pathlib import Path

ASSETS_DIR = "assets"
_LINK = re.compile(r"""(?P<attr>src|href)=(?P<q>["']?)(?P<url>https://cdn\.[^"' >]+)(?P=q)""")


PLOTLY_KEY = "plotly.js"  # key of the matching plotly.js in install_assets' mapping


def packaged_assets() -> Path:
    return Path(str(resources.files("popmon") / "visualization" / "templates" / "assets"))


def python_plotly_js() -> tuple[Path, str]:
    """The plotly.js bundled with the installed Python plotly, and its version."""
    path = Path(str(resources.files("plotly") / "package_data" / "plotly.min.js"))
    with path.open("rb") as f:
        head = f.read(200).decode("ascii", "replace")
    m = re.search(r"plotly\.js v(\d+\.\d+\.\d+)", head)
    return path, (m.group(1) if m else "unknown")


def _local_name(url: str, available: dict[str, str]) -> str | None:
    base = url.rsplit("/", 1)[-1]
    if base.startswith("plotly") and base.endswith(".js"):
        base = PLOTLY_KEY  # the CDN file is versioned: use the copy that matches the figures
    return available.get(base)


def localize_links(html: str, available: dict[str, str]) -> str:
    """Replace CDN links whose file popmon ships with ``assets/<kind>/<file>`` links."""

    def sub(m: re.Match[str]) -> str:
        local = _local_name(m.group("url"), available)
        if local is None:
            return m.group(0)
        return f'{m.group("attr")}="{ASSETS_DIR}/{local}"'

    return _LINK.sub(sub, html)


def _copy(file: Path, dest: Path) -> None:
    if not dest.is_file() or dest.stat().st_size != file.stat().st_size:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp")
        shutil.copyfile(file, tmp)
        tmp.replace(dest)  # a report being read never sees half a file


def install_assets(reports_dir: Path, source: Path | None = None) -> dict[str, str]:
    """Copy popmon's assets and the matching plotly.js into ``reports_dir/assets`` (once).

    Returns a map file name → path relative to ``reports_dir``; ``"plotly.js"`` maps to the
    Python plotly package's plotly.js (``js/plotly-<version>.min.js``), not popmon's old copy.
    """
    source = source or packaged_assets()
    target = Path(reports_dir) / ASSETS_DIR
    available: dict[str, str] = {}
    for file in sorted(source.rglob("*")):
        if not file.is_file() or file.name == PLOTLY_KEY:
            continue
        rel = file.relative_to(source)
        _copy(file, target / rel)
        available[file.name] = rel.as_posix()
    plotly_js, version = python_plotly_js()
    rel_plotly = f"js/plotly-{version}.min.js"
    _copy(plotly_js, target / rel_plotly)
    available[PLOTLY_KEY] = rel_plotly
    return available
