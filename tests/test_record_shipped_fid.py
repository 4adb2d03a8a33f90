"""benchmarks/record_shipped_fid.py reads every row of the README's FID table and makes each row's digits."""

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from diffusion_lesson import models
from diffusion_lesson.cli.provenance import sampling_label
from diffusion_lesson.cli.sample import build_parser, describe_sampling

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from record_shipped_fid import README, Row, fid_table, run, sample_args  # noqa: E402

SHIPPED_FILE = {"mnist-unet": "mnist_unet.pt", "mnist-latent-unet": "mnist_latent_unet.pt"}


TABLE = """## FID of the shipped models

| model | sampler | N | FID | KID +- standard error |
|---|---|---|---|---|
| real floor (training digits) | - | 10,000 | 0.11 | -0.0010 +- 0.0018 |
| pixel U-Net (`mnist-unet`) | DDIM-50, eta 0 | 10,000 | 0.33 | 0.0046 +- 0.0016 |
| latent diffusion (`mnist-latent-unet`) | DDIM-50, eta 0, x0 clipped | 1,000 | 0.58 | -0.0201 +- 0.0238 |

| pixel U-Net (`mnist-unet`) | DDPM-1000 | 500 | 0.51 | 0.0283 +- 0.0277 |

## The next section

| pixel U-Net (`mnist-unet`) | DDPM-1000 | 1,000 | 9.99 | 0.0283 +- 0.0277 |
"""


def test_the_table_is_read_row_by_row_with_its_printed_numbers():
    assert fid_table(TABLE) == {
        Row("mnist-unet", "DDIM-50, eta 0", 10000): ("0.33", "0.0046", "0.0016"),
        Row("mnist-latent-unet", "DDIM-50, eta 0, x0 clipped", 1000): ("0.58", "-0.0201", "0.0238"),
        Row("mnist-unet", "DDPM-1000", 500): ("0.51", "0.0283", "0.0277"),
    }
    assert Row("mnist-unet", "DDPM-1000", 1000, seed=2).label == "DDPM-1000, seed 2, N 1000"


def test_the_readme_table_has_rows_of_both_shipped_models():
    assert {row.model for row in fid_table(README.read_text(encoding="utf-8"))} == set(SHIPPED_FILE)


@pytest.mark.parametrize("row", list(fid_table(README.read_text(encoding="utf-8"))), ids=lambda r: r.slug)
def test_each_rows_sample_command_makes_digits_labelled_as_the_row(row, tmp_path):
    args = build_parser().parse_args(sample_args(row, tmp_path / "x.npz"))
    loaded = SimpleNamespace(path=models.PRETRAINED_DIR / SHIPPED_FILE[row.model], autoencoder_path=None,
                             schedule=SimpleNamespace(T=1000))  # fmt: skip
    made_by = describe_sampling(args, loaded, torch.device("cpu"))
    assert sampling_label(made_by) == row.label


def test_an_unknown_sampler_is_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match="DPM-Solver-20"):
        sample_args(Row("mnist-unet", "DPM-Solver-20", 1000), tmp_path / "x.npz")


def test_the_dearest_rows_cost_the_most_network_evaluations():
    assert Row("mnist-unet", "DDPM-1000", 1000).cost == 20 * Row("mnist-unet", "DDIM-50, eta 1", 1000).cost


def test_only_and_skip_choose_rows_by_label():
    ddpm, ddim = Row("mnist-unet", "DDPM-1000", 1000), Row("mnist-latent-unet", "DDIM-50, eta 0", 10000)
    assert ddpm.wanted("DDPM", []) and not ddim.wanted("DDPM", [])
    assert ddim.wanted("", ["DDPM"]) and not ddpm.wanted("", ["DDPM"]) and not ddpm.wanted("", ["eta", "DDPM"])
    assert ddim.wanted("latent", []) and ddim.wanted("N 10000", ["seed 1"]) and not ddim.wanted("", ["seed 0"])


def test_a_jobs_output_goes_to_its_log_file_when_given_one(tmp_path):
    log = tmp_path / "x.sample.log"
    done = run("diffusion_lesson.no_such_module", [], 1, log)
    assert done.returncode != 0 and done.stdout is None
    assert "No module named diffusion_lesson.no_such_module" in log.read_text(encoding="utf-8")
    assert "No module named" in run("diffusion_lesson.no_such_module", [], 1).stderr
