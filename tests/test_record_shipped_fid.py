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

from record_shipped_fid import README, Row, readme_rows, sample_args  # noqa: E402
from test_shipped_fid import fid_table_rows  # noqa: E402

SHIPPED_FILE = {"mnist-unet": "mnist_unet.pt", "mnist-latent-unet": "mnist_latent_unet.pt"}


def test_every_row_of_the_readme_table_is_read():
    rows = readme_rows(README.read_text(encoding="utf-8"))
    assert {(r.model, f"{r.sampler}, seed 0, N {r.n}") for r in rows} == set(fid_table_rows())


@pytest.mark.parametrize("row", readme_rows(README.read_text(encoding="utf-8")), ids=lambda r: r.slug)
def test_each_rows_sample_command_makes_digits_labelled_as_the_row(row, tmp_path):
    args = build_parser().parse_args(sample_args(row, tmp_path / "x.npz"))
    loaded = SimpleNamespace(path=models.PRETRAINED_DIR / SHIPPED_FILE[row.model], autoencoder_path=None,
                             schedule=SimpleNamespace(T=1000))  # fmt: skip
    made_by = describe_sampling(args, loaded, torch.device("cpu"))
    assert sampling_label(made_by) == f"{row.sampler}, seed 0, N {row.n}"


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
