"""A TIFF whose header is intact but whose tiles are cut off: exit 2, named, no output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import smooth_image, write_geotiff

SEGPIPE = str(Path(sys.executable).parent / "segpipe")


def test_a_truncated_tiff_is_refused_with_exit_2_naming_it(tmp_path):
    full = write_geotiff(tmp_path / "full.tif", smooth_image((3, 512, 512), "uint8"))
    data = full.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[: len(data) // 3])  # the header and the tile index survive
    result = subprocess.run(
        [SEGPIPE, "run", "--input", str(cut), "--output", str(tmp_path / "out.tif"),
         "--model", "unet", "--random-weights", "--workers", "0", "--quiet"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2, result.stderr
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith(f"error: {cut}") and "truncated or corrupt" in lines[0]
    assert not (tmp_path / "out.tif").exists()
