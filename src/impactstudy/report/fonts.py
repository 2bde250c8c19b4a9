"""The report's fonts: Noto Sans CJK SC (Debian: fonts-noto-cjk) for every text, in the charts
(matplotlib), the page (the browser) and the PDF (Typst), so Chinese never prints as empty boxes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

__all__ = ["CJK_FAMILY", "CJK_FONT_FILES", "CJK_MONO_FAMILY", "FontError", "cjk_font_file"]

#: the family every text is set in (its Latin glyphs are used too)
CJK_FAMILY = "Noto Sans CJK SC"
#: expressions and codes (the same collection's monospaced face)
CJK_MONO_FAMILY = "Noto Sans Mono CJK SC"
#: where Debian's fonts-noto-cjk puts the font (used when fontconfig's tools are absent)
CJK_FONT_FILES = (
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc"),
)


class FontError(RuntimeError):
    """The CJK font the report needs is not installed."""


def cjk_font_file(family: str = CJK_FAMILY) -> Path:
    """The file of ``family`` as fontconfig finds it (else Debian's path for the default family).

    Raises :class:`FontError` when the family is not installed: a font without CJK glyphs
    renders Chinese as empty boxes (tofu)."""
    fc_list = shutil.which("fc-list")
    if fc_list is not None:
        out = subprocess.run(
            [fc_list, f":family={family}", "file"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        files = sorted(line.strip().rstrip(":") for line in out.splitlines() if line.strip())
        if files:
            return Path(files[0])
    elif family == CJK_FAMILY:
        for path in CJK_FONT_FILES:
            if path.is_file():
                return path
    raise FontError(
        f"the font {family!r} is not installed, so the report's Chinese would print as empty "
        "boxes; install the Debian package fonts-noto-cjk (scripts/setup.sh does)"
    )
