"""The README's FID table of the shipped models is the manifest's record, and the record is the shipped file's.

Every row of the README's table for `mnist-unet` and `mnist-latent-unet` must show the FID and KID that
`python -m diffusion_lesson.fid --record` stored in diffusion_lesson/pretrained/manifest.json, and every
stored one must be in the table, so no number there is typed in by hand or left from a model replaced.
Marked slow: the shipped pixel model, sampled and scored with the README's commands, gives its
recorded FID at N = 500 again (DDIM-50, eta 0, seed 0).
"""

import re
import sys
from pathlib import Path

import pytest

from diffusion_lesson import models
from diffusion_lesson.cli import fid, sample

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from record_shipped_fid import README, fid_table  # noqa: E402

SCORED = ("mnist-unet", "mnist-latent-unet")


def fid_table_rows() -> dict[tuple[str, str], tuple[str, str, str]]:
    """(model, manifest label) -> (FID, KID, KID's standard error) as printed in the README's table."""
    table = fid_table(README.read_text(encoding="utf-8"))
    return {(row.model, row.label): numbers for row, numbers in table.items()}


def test_the_readme_fid_table_shows_what_the_manifest_recorded():
    rows = fid_table_rows()
    recorded = {(name, label): r for name in SCORED for label, r in models.manifest()[name].get("fid", {}).items()}
    assert recorded, "the manifest records no FID for the shipped models"
    assert sorted(rows) == sorted(recorded), "the README's table and the manifest list different measurements"
    for key, r in recorded.items():
        expected = (f"{r['fid']:.2f}", f"{r['kid']:.4f}", f"{r['kid_std_error']:.4f}")
        assert rows[key] == expected, f"{key}: the README shows {rows[key]}, the manifest recorded {expected}"


@pytest.mark.slow
def test_the_shipped_pixel_model_scores_its_recorded_fid(tmp_path, capsys):
    out = tmp_path / "ddim50-500.npz"
    assert sample.main(["--n", "500", "--seed", "0", "--out", str(out), "--device", "cpu"]) == 0
    assert fid.main([str(out)]) == 0
    measured = float(re.search(r"^FID: ([\d.]+)$", capsys.readouterr().out, re.MULTILINE).group(1))
    recorded = models.manifest()["mnist-unet"]["fid"]["DDIM-50, eta 0, seed 0, N 500"]["fid"]
    # the same seed on the same device: only the thread count can change the last digits
    assert measured == pytest.approx(recorded, abs=0.01)
