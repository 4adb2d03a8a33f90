"""A wall-clock budget for training (``StepBudget``, ``train(budget_s=...)``): the arithmetic on a fake
clock, then a real run that must stop in time with its learning rate decayed."""

import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from diffusion_lesson.losses import DiffusionObjective
from diffusion_lesson.schedules import make_schedule
from diffusion_lesson.timing import StepBudget
from diffusion_lesson.training import TrainConfig, lr_at, start_training, train
from diffusion_lesson.unet import UNet, UNetConfig
from tests.test_training import _fake_data


class FakeClock:
    """Seconds that move only when told: ``tick(s)``."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += seconds


def test_the_end_is_the_measured_rate_times_the_time_left():
    clock = FakeClock()
    budget = StepBudget(10.0, first_step=0, skip=3, every=20, clock=clock)
    clock.tick(1.0)  # start-up: the first three steps take a second, and are left out of the rate
    answers = {}
    for step in range(1, 60):
        if step > 3:
            clock.tick(0.1)  # then 10 steps a second
        answers[step] = budget.last_step(step)
    assert all(answers[s] is None for s in range(1, 23))  # nothing measured yet
    # at step 23: 20 steps in 2 s -> 10/s; 3 s spent, 7 s left -> 70 more steps
    assert answers[23] == 93
    assert all(answers[s] is None for s in range(24, 43))
    assert answers[43] == 93  # the same speed, the same end


def test_a_slower_machine_moves_the_end_and_a_spent_budget_ends_now():
    clock = FakeClock()
    budget = StepBudget(10.0, first_step=500, skip=3, every=20, clock=clock)  # a resumed run: counts from 500
    for step in range(501, 524):
        clock.tick(0.1 if step > 503 else 0.0)
        end = budget.last_step(step)
    assert end == 523 + 80  # 10 steps/s, 8 s left
    clock.tick(20 * 0.45)  # steps 524-543: the machine slows to about 2 steps/s
    # 11 s spent of the 10: the run ends now
    assert budget.last_step(543) == 543
    clock.tick(5.0)
    assert budget.last_step(563) == 563


def test_a_budget_must_be_positive():
    with pytest.raises(ValueError, match="positive number of seconds"):
        StepBudget(0, first_step=0)


def test_a_budgeted_run_stops_in_time_with_its_learning_rate_decayed():
    tiny = UNet(UNetConfig(base_channels=8, norm_groups=4))
    config = TrainConfig(steps=5, batch_size=8, lr=1e-3, warmup_steps=2)  # steps is ignored under a budget
    state = start_training(tiny, DiffusionObjective(make_schedule()), config)
    start = time.perf_counter()
    train(state, _fake_data(), progress=False, budget_s=3.0)
    seconds = time.perf_counter() - start
    assert 2.0 < seconds < 4.5, f"a 3 s budget took {seconds:.2f} s"
    assert state.step > 30  # the tiny model does hundreds of steps a second: far more than config's 5
    assert state.config.steps == state.step  # the checkpoint records where the run ended
    assert lr_at(state.step - 1, state.config) < 0.05 * config.lr  # the cosine decay ended with the time


def test_notebook_03_asks_for_a_time_or_a_step_count(monkeypatch, tmp_path):
    """TRAIN_MINUTES = None with no TRAIN_STEPS is refused before any data is loaded, saying what to set."""
    monkeypatch.setenv("DIFFUSION_LESSON_QUICK", "0")  # quick mode would set TRAIN_STEPS itself
    monkeypatch.setenv("DIFFUSION_LESSON_RUNS", str(tmp_path))
    notebook = nbformat.read(Path(__file__).resolve().parents[1] / "notebooks" / "03_training.ipynb", as_version=4)
    notebook.cells = notebook.cells[:4]  # title, imports, parameters, setup
    notebook.cells[2].source += "\nTRAIN_MINUTES = None"
    with pytest.raises(CellExecutionError, match="set it to how many minutes to train, or set TRAIN_STEPS"):
        NotebookClient(notebook, timeout=300, kernel_name="python3").execute()
