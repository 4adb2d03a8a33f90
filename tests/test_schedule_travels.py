"""The schedule travels with the model: a learner's cosine-trained model is sampled with its cosine schedule.

Before the model registry, chapters 03-06 built make_schedule("linear") for whatever model they
loaded. Here a tiny cosine-trained runs/mnist-unet.pt is put in a runs folder, and the sampling
command and notebook 04 (quick mode, in a fresh kernel) must both say, and use, its cosine schedule.
"""

import json
import os
from pathlib import Path

import nbformat
import pytest
import torch
from nbclient import NotebookClient

from diffusion_lesson.checkpoints import save_checkpoint
from diffusion_lesson.cli import sample as sample_cli
from diffusion_lesson.models import RUNS_ENV_VAR, load_course_model
from diffusion_lesson.unet import UNet, UNetConfig

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.fixture
def cosine_runs(tmp_path, monkeypatch):
    config = UNetConfig(base_channels=8, norm_groups=4)
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "mnist-unet.pt", kind="unet", model=UNet(config), model_config=config.to_dict(),
                    schedule={"name": "cosine", "T": 1000}, step=5)  # fmt: skip
    monkeypatch.setenv(RUNS_ENV_VAR, str(tmp_path))
    return tmp_path


def test_the_sample_command_uses_the_checkpoints_schedule(cosine_runs, tmp_path, capsys):
    out = tmp_path / "s.npz"
    args = ["--n", "2", "--seed", "0", "--steps", "2", "--device", "cpu", "--out", str(out)]
    assert sample_cli.main([*args, "--checkpoint", str(cosine_runs / "mnist-unet.pt")]) == 0
    assert "cosine schedule" in capsys.readouterr().out


def test_notebook_04_samples_the_learners_model_with_its_cosine_schedule(cosine_runs):
    assert load_course_model("mnist-unet").schedule.name == "cosine"
    notebook = nbformat.read(NOTEBOOKS / "04_sampling.ipynb", as_version=4)
    notebook.cells = notebook.cells[:4]  # imports, parameters, loading: the cells that pick model and schedule
    notebook.cells.append(nbformat.v4.new_code_cell("print(json.dumps([schedule.name, loaded.description]))"))
    notebook.cells[1].source += "\nimport json"
    assert os.environ[RUNS_ENV_VAR] == str(cosine_runs)  # the kernel inherits this process's environment
    NotebookClient(notebook, timeout=300, kernel_name="python3").execute()
    name, description = json.loads(notebook.cells[-1].outputs[0]["text"])
    assert name == "cosine" and description.startswith("your own model") and "cosine schedule" in description
