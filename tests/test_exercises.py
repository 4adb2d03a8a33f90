"""The exercises: checkers pass the package and name each classic mistake; student notebooks hold no solution.

Each wrong implementation below is written the way a learner would write it, independently of the
checkers' own list of mistakes, and must get the message that names its mistake.
"""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

from diffusion_lesson import checkers
from diffusion_lesson.checking import Case, judge
from diffusion_lesson.cli import exercises as exercises_cli
from diffusion_lesson.forward import predict_x0_from_eps, q_posterior, q_sample, q_step
from diffusion_lesson.metrics import FeatureStats, frechet_distance
from diffusion_lesson.samplers import ddim_step, ddpm_step

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def per_sample(values, x):
    return values.view(-1, *([1] * (x.ndim - 1)))


def closed_form(x0, t, eps, s):
    ab = per_sample(s.alpha_bar[t], x0)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * eps


def ddpm_by_hand(xt, t, e, s, z, sigma=None, last=0, coef=None, alpha_power=0.5, u=None):
    u = t if u is None else u
    coef = s.beta[u] / (1 - s.alpha_bar[u]).sqrt() if coef is None else coef
    mean = (xt - coef * e) / s.alpha[u] ** alpha_power
    return mean + (s.beta[u].sqrt() if sigma is None else sigma) * z if t > last else mean


def ddim_by_hand(xt, t, p, e, s, ab_prev=None, ab_t=None, direction=None):
    ab_t = s.alpha_bar[t] if ab_t is None else ab_t
    ab_prev = (s.alpha_bar[p] if p >= 0 else torch.tensor(1.0, dtype=xt.dtype)) if ab_prev is None else ab_prev
    x0 = (xt - (1 - ab_t).sqrt() * e) / ab_t.sqrt()
    return ab_prev.sqrt() * x0 + (1 - (ab_prev if direction is None else direction)).sqrt() * e


def fid_by_hand(m1, c1, m2, c2, root=None, factor=2.0, mean_term=None):
    root = scipy.linalg.sqrtm(c1 @ c2).real if root is None else root
    mean_term = np.sum((m1 - m2) ** 2) if mean_term is None else mean_term
    return float(mean_term + np.trace(c1 + c2 - factor * root))


def posterior_by_hand(x0, xt, t, s, u=None, abp=None, var=None, swap=False):
    u = t if u is None else u
    beta, alpha, ab = s.beta[u], s.alpha[u], s.alpha_bar[u]
    abp = s.alpha_bar_prev[t] if abp is None else abp
    c0, ct = abp.sqrt() * beta / (1 - ab), alpha.sqrt() * (1 - abp) / (1 - ab)
    mean = ct * x0 + c0 * xt if swap else c0 * x0 + ct * xt
    return mean, (1 - abp) / (1 - ab) * beta if var is None else var


RIGHT = {  # checker -> the package's own function, as the learner's would be called
    "check_q_step": lambda x, t, e, s: q_step(x, t, s, noise=e),
    "check_q_sample": lambda x0, t, e, s: q_sample(x0, t, s, noise=e),
    "check_posterior": lambda x0, xt, t, s: q_posterior(x0, xt, t, s),
    "check_simple_loss": lambda model, x0, t, e, s: ((e - model(closed_form(x0, t, e, s), t)) ** 2).mean(),
    "check_x0_from_eps": lambda xt, t, e, s: predict_x0_from_eps(xt, t, e, s),
    "check_ddpm_step": lambda xt, t, e, s, z: ddpm_step(xt, t, e, s, noise=z).x_prev,
    "check_ddim_step": lambda xt, t, p, e, s: ddim_step(xt, t, p, e, s).x_prev,
    "check_latent_scale": lambda m: m / m.std(),
    "check_frechet_distance": lambda m1, c1, m2, c2: frechet_distance(FeatureStats(m1, c1, 0), FeatureStats(m2, c2, 0)),
    "check_guidance": lambda c, u, w: u + w * (c - u),
}

MISTAKES = [  # (checker, a learner's wrong function, words the verdict must contain)
    ("check_q_step", lambda x, t, e, s: s.alpha[t].sqrt() * x + s.beta[t] * e, "a variance used as a standard"),
    ("check_q_step", lambda x, t, e, s: x + s.beta[t].sqrt() * e, "the signal is not shrunk"),
    ("check_q_step", lambda x, t, e, s: s.alpha[t] * x + s.beta[t].sqrt() * e, "alpha_t used where sqrt(alpha_t)"),
    ("check_q_step", lambda x, t, e, s: (1 - s.beta[t - 1]).sqrt() * x + s.beta[t - 1].sqrt() * e, "t off by one"),
    ("check_q_sample", lambda x0, t, e, s: (a := per_sample(s.alpha_bar[t], x0)).sqrt() * x0 + (1 - a) ** 0.25 * e,
     "sqrt(1 - alpha_bar_t) used as a variance"),
    ("check_q_sample", lambda x0, t, e, s: (a := per_sample(s.alpha_bar[t], x0)).sqrt() * x0 + (1 - a) * e,
     "a variance used as a standard deviation"),
    ("check_q_sample", lambda x0, t, e, s: (a := per_sample(s.alpha_bar[t], x0)) * x0 + (1 - a).sqrt() * e,
     "alpha_bar_t used where sqrt(alpha_bar_t) belongs"),
    ("check_q_sample", lambda x0, t, e, s: (1 - (a := per_sample(s.alpha_bar[t], x0))).sqrt() * x0 + a.sqrt() * e,
     "coefficients are swapped"),
    ("check_q_sample", lambda x0, t, e, s: per_sample(s.alpha_bar[t].sqrt(), x0) * x0
     + per_sample(s.beta[t].sqrt(), x0) * e, "the noise of one step"),
    ("check_q_sample", lambda x0, t, e, s: per_sample(s.alpha[t].sqrt(), x0) * x0
     + per_sample(s.beta[t].sqrt(), x0) * e, "one step of eq. 2"),
    ("check_q_sample", lambda x0, t, e, s: closed_form(x0, t - 1, e, s), "t off by one"),
    ("check_q_sample", lambda x0, t, e, s: (a := per_sample(s.alpha_bar_prev[t], x0)).sqrt() * x0 + (1 - a).sqrt() * e,
     "alpha_bar_prev[t] belongs to the step before"),
    ("check_posterior", lambda x0, xt, t, s: posterior_by_hand(x0, xt, t, s, var=s.beta[t]),
     "the posterior variance swapped for beta"),
    ("check_posterior", lambda x0, xt, t, s: (q_posterior(x0, xt, t, s).mean, q_posterior(x0, xt, t, s).var.sqrt()),
     "a standard deviation returned as the variance"),
    ("check_posterior", lambda x0, xt, t, s: posterior_by_hand(x0, xt, t, s, abp=s.alpha_bar[t - 1]),
     "alpha_bar[t - 1] at t = 0 is alpha_bar[-1]"),
    ("check_posterior", lambda x0, xt, t, s: posterior_by_hand(x0, xt, t, s, u=t - 1, abp=s.alpha_bar[t - 2]),
     "t off by one"),
    ("check_posterior", lambda x0, xt, t, s: posterior_by_hand(x0, xt, t, s, swap=True), "coefficients are swapped"),
    ("check_simple_loss", lambda model, x0, t, e, s: ((x0 - model(closed_form(x0, t, e, s), t)) ** 2).mean(),
     "the target is x0"),
    ("check_simple_loss", lambda model, x0, t, e, s: ((e - model(x0, t)) ** 2).mean(), "the model was shown x0"),
    ("check_simple_loss", lambda model, x0, t, e, s: ((e - model(closed_form(x0, t, e, s), t)) ** 2).sum(),
     "summed instead of averaged"),
    ("check_simple_loss", lambda model, x0, t, e, s: (e - model(closed_form(x0, t, e, s), t)).abs().mean(),
     "the mean absolute error"),
    ("check_simple_loss", lambda model, x0, t, e, s: ((e - model(closed_form(x0, t, e, s), t + 1)) ** 2).mean(),
     "t off by one"),
    ("check_x0_from_eps", lambda xt, t, e, s: (xt - (1 - (a := per_sample(s.alpha_bar[t], xt))).sqrt() * e) * a.sqrt(),
     "multiplied by sqrt(alpha_bar_t)"),
    ("check_x0_from_eps", lambda xt, t, e, s: (xt + (1 - (a := per_sample(s.alpha_bar[t], xt))).sqrt() * e) / a.sqrt(),
     "the noise added instead of subtracted"),
    ("check_x0_from_eps", lambda xt, t, e, s: (xt - (1 - (a := per_sample(s.alpha_bar[t], xt))) * e) / a.sqrt(),
     "a variance used as a standard deviation"),
    ("check_x0_from_eps", lambda xt, t, e, s: (xt - (1 - (a := per_sample(s.alpha_bar[t], xt))).sqrt() * e) / a,
     "alpha_bar_t used where sqrt(alpha_bar_t) belongs"),
    ("check_x0_from_eps", lambda xt, t, e, s: (xt - (1 - (a := per_sample(s.alpha_bar[t - 1], xt))).sqrt() * e)
     / a.sqrt(), "t off by one"),
    ("check_ddpm_step", lambda xt, t, e, s, z: ddpm_by_hand(xt, t, e, s, z, sigma=0), "the sampler's noise is"),
    ("check_ddpm_step", lambda xt, t, e, s, z: ddpm_by_hand(xt, t, e, s, z, last=-1), "noise added at the last step"),
    ("check_ddpm_step", lambda xt, t, e, s, z: ddpm_by_hand(xt, t, e, s, z, last=1), "the noise left out at t = 1"),
    ("check_ddpm_step", lambda xt, t, e, s, z: ddpm_by_hand(xt, t, e, s, z, sigma=s.beta[t]),
     "a variance used as a standard deviation"),
    ("check_ddpm_step", lambda xt, t, e, s, z: ddpm_step(xt, t, e, s, "posterior", noise=z).x_prev,
     "the posterior variance used as sigma_t^2"),
    ("check_ddpm_step", lambda xt, t, e, s, z: ddpm_by_hand(xt, t, e, s, z, coef=(1 - s.alpha_bar[t]).sqrt()),
     "the mean subtracts sqrt(1 - alpha_bar_t) eps_pred"),
    ("check_ddpm_step", lambda xt, t, e, s, z: ddpm_by_hand(xt, t, e, s, z, alpha_power=1.0),
     "divided by alpha_t where eq. 11 divides by sqrt(alpha_t)"),
    ("check_ddpm_step", lambda xt, t, e, s, z: ddpm_by_hand(xt, t, e, s, z, u=t - 1), "t off by one"),
    ("check_ddim_step", lambda xt, t, p, e, s: ddim_by_hand(xt, t, p, e, s, ab_prev=s.alpha_bar[p]),
     "t_prev = -1 means the clean x0"),
    ("check_ddim_step", lambda xt, t, p, e, s: ddim_by_hand(xt, t, p, e, s, ab_prev=s.alpha_bar_prev[t]),
     "alpha_bar_prev[t] is the step just before t"),
    ("check_ddim_step", lambda xt, t, p, e, s: ddim_by_hand(
        xt, t, p, e, s, ab_t=s.alpha[t], ab_prev=s.alpha[p] if p >= 0 else torch.tensor(1.0, dtype=xt.dtype)),
     "DDIM's alpha_t is our alpha_bar_t"),
    ("check_ddim_step", lambda xt, t, p, e, s: ddim_by_hand(xt, t, p, e, s, direction=s.alpha_bar[t]),
     "the direction term uses sqrt(1 - alpha_bar_t)"),
    ("check_latent_scale", lambda m: m * m.std(), "the latent scale applied the wrong way round"),
    ("check_latent_scale", lambda m: (m - m.mean()) / m.std(), "also centred"),
    ("check_latent_scale", lambda m: m / m.std(dim=(0, 2, 3), keepdim=True), "one scale per channel"),
    ("check_latent_scale", lambda m: m / m.var(), "divided by the variance"),
    ("check_frechet_distance", lambda m1, c1, m2, c2: fid_by_hand(m1, c1, m2, c2, root=np.sqrt(c1 @ c2)),
     "an element-wise square root"),
    ("check_frechet_distance", lambda m1, c1, m2, c2: fid_by_hand(
        m1, c1, m2, c2, root=(scipy.linalg.sqrtm(c1) @ scipy.linalg.sqrtm(c2)).real), "the product of two square"),
    ("check_frechet_distance", lambda m1, c1, m2, c2: fid_by_hand(m1, c1, m2, c2, factor=1.0), "the factor 2 is"),
    ("check_frechet_distance", lambda m1, c1, m2, c2: fid_by_hand(m1, c1, m2, c2, mean_term=np.linalg.norm(m1 - m2)),
     "the mean term is not squared"),
    ("check_guidance", lambda c, u, w: c + w * (u - c), "the two predictions are swapped"),
    ("check_guidance", lambda c, u, w: (1 + w) * c - w * u, "the guidance paper's w"),
    ("check_guidance", lambda c, u, w: w * (c - u), "the unconditional prediction is missing"),
]  # fmt: skip


@pytest.mark.parametrize("checker", sorted(RIGHT))
def test_every_checker_passes_the_package(checker):
    result = getattr(checkers, checker)(RIGHT[checker])
    assert result.passed, result.message
    assert "matches the package" in result.message


@pytest.mark.parametrize(("checker", "wrong", "words"), MISTAKES, ids=[f"{c}-{w}" for c, _, w in MISTAKES])
def test_each_classic_mistake_is_named(checker, wrong, words, capsys):
    result = getattr(checkers, checker)(wrong)
    assert not result.passed
    assert words in result.message, result.message
    assert result.message in capsys.readouterr().out  # printed as well, for the notebook


@pytest.mark.parametrize("checker", sorted(RIGHT))
def test_a_stub_is_not_yet_implemented(checker):
    def stub(*args):
        raise NotImplementedError("write it here")

    result = getattr(checkers, checker)(stub)
    assert not result.passed and "is not yet implemented" in result.message


def test_every_public_checker_is_tested():
    assert {name for name in dir(checkers) if name.startswith("check_")} == set(RIGHT)


def test_other_errors_get_one_line_and_a_hint():
    def broken(x0, t, eps, schedule):
        return schedule.alpha_bar[t].sqrt() * x0  # (B,) against (B, 1, 6, 6): a broadcasting error

    result = checkers.check_q_sample(broken)
    assert not result.passed and "raised RuntimeError on the case t = [0, 1, 10, 300, 998]" in result.message
    assert "Hint:" in result.message and "reshape it to (B, 1, 1, 1)" in result.message and "\n" not in result.message
    too_far = checkers.check_q_step(lambda x, t, e, s: s.alpha[t + 1].sqrt() * x + s.beta[t + 1].sqrt() * e)
    assert "raised IndexError on the case t = 999" in too_far.message and "t off by one" in too_far.message


def test_wrong_shape_says_the_shape_expected():
    per_image = checkers.check_simple_loss(
        lambda m, x0, t, e, s: ((e - m(closed_form(x0, t, e, s), t)) ** 2).mean((1, 2, 3))
    )
    assert "of shape (6,), expected a single number" in per_image.message
    one_image = checkers.check_q_step(lambda x, t, e, s: q_step(x, t, s, noise=e)[:1])
    assert "of shape (1, 1, 6, 6), expected shape (4, 1, 6, 6)" in one_image.message
    bad_var = checkers.check_posterior(lambda x0, xt, t, s: (q_posterior(x0, xt, t, s).mean, torch.ones(5)))
    assert "does not broadcast to the mean's shape (3, 1, 6, 6)" in bad_var.message


def test_a_complex_answer_is_refused_with_a_hint():
    def complex_fid(m1, c1, m2, c2):  # scipy's sqrtm may return a complex matrix; forgetting .real leaks it out
        return np.sum((m1 - m2) ** 2) + np.trace(c1 + c2 - 2 * scipy.linalg.sqrtm(c1 @ c2).astype(complex))

    result = checkers.check_frechet_distance(complex_fid)
    assert not result.passed and "returned a complex number" in result.message and ".real" in result.message


def test_an_unnamed_error_says_where_and_how_far():
    result = checkers.check_guidance(lambda c, u, w: u + w * (c - u) + (0.5 if w == 3.0 else 0.0))
    assert (
        not result.passed and "does not match the package on the case w = 3.0: largest difference 0.5" in result.message
    )


def test_the_checkers_can_fail():
    """judge itself: a reference that disagrees with the function fails it (no checker passes everything)."""
    result = judge(lambda x: x + 1, [Case("x = 1", (torch.ones(2),))], lambda x: x, [], hint="add nothing")
    assert not result.passed and "largest difference 1" in result.message


# ------------------------------------------------------------------------------------- the notebooks


def notebook_cells(path):
    return json.loads(path.read_text())["cells"]


def solution_cells():
    found = []
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        cells = notebook_cells(path)
        found += [(path, cells, c) for c in cells if "solution" in c["metadata"].get("tags", [])]
    return found


SOLUTIONS = solution_cells()


def run_cell(cells, source):
    """Run the notebook's import cell, then ``source``; the namespace's ``result`` is the checker's verdict."""
    namespace = {}
    exec("".join(cells[1]["source"]), namespace)  # noqa: S102 - the notebook's own imports
    exec(source, namespace)  # noqa: S102
    return namespace["result"]


def test_every_notebook_from_01_to_07_has_exercises():
    assert {"01", "02", "03", "04", "05", "06", "07"} <= {path.name[:2] for path, _, _ in SOLUTIONS}
    assert len(SOLUTIONS) >= 9


@pytest.mark.parametrize(("path", "cells", "cell"), SOLUTIONS, ids=[f"{p.stem}-{c['id']}" for p, _, c in SOLUTIONS])
def test_notebook_solutions_pass_and_their_stubs_are_not_yet_implemented(path, cells, cell):
    assert run_cell(cells, "".join(cell["source"])).passed
    stub = run_cell(cells, "".join(cell["metadata"]["stub"]))
    assert not stub.passed and "is not yet implemented" in stub.message
    assert "Hint" in "".join(cell["metadata"]["stub"])


def test_no_other_cell_uses_what_a_solution_defines():
    """The cheap half of "student copies run to the end": later cells call the package, never the learner's function."""
    for path, cells, cell in SOLUTIONS:
        tree = ast.parse("".join(cell["source"]))
        defined = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
        assert defined, f"{path.name} {cell['id']}: a solution cell defines the learner's function"
        for other in cells:
            if other is not cell and other["cell_type"] == "code":
                used = {n.id for n in ast.walk(ast.parse("".join(other["source"]))) if isinstance(n, ast.Name)}
                assert not used & defined, f"{path.name} {other['id']} uses {used & defined} from a solution"


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("student")
    assert exercises_cli.main(["--out", str(out)]) == 0
    return out


def test_student_notebooks_hold_the_stubs_and_no_solution_code(student_dir):
    assert sorted(p.name for p in student_dir.glob("*.ipynb")) == sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    for path, cells, cell in SOLUTIONS:
        student_text = (student_dir / path.name).read_text()
        student = json.loads(student_text)
        stub, solution = "".join(cell["metadata"]["stub"]), "".join(cell["source"])
        assert stub in ["".join(c["source"]) for c in student["cells"]]
        elsewhere = {line.strip() for c in cells if c is not cell for line in c["source"]} | {
            line.strip() for line in stub.splitlines()
        }
        own = [line.strip() for line in solution.splitlines() if line.strip() and line.strip() not in elsewhere]
        assert own, f"{path.name} {cell['id']}: the solution has no line of its own to look for"
        for line in own:  # in the source, the metadata, anywhere in the file
            assert json.dumps(line)[1:-1] not in student_text, (
                f"{path.name}: solution line {line!r} in the student copy"
            )
        assert "solution" not in json.dumps([c["metadata"] for c in student["cells"]])
        assert all(not c.get("outputs") for c in student["cells"])


def test_the_command_refuses_bad_output_folders(student_dir, tmp_path, capsys):
    for argv, words in (
        (["--out", str(student_dir)], "already holds 01_forward_process.ipynb"),
        (["--out", str(NOTEBOOKS)], "is the folder of the solution notebooks"),
        (["--out", str(NOTEBOOKS / "01_forward_process.ipynb")], "is a file, not a folder"),
        (["--out", str(tmp_path), "--notebooks", str(tmp_path / "missing")], "no folder at"),
        (["--out", str(tmp_path / "a"), "--notebooks", str(tmp_path)], "no .ipynb files in"),
    ):
        with pytest.raises(SystemExit) as stop:
            exercises_cli.main(argv)
        assert stop.value.code == 2 and words in capsys.readouterr().err
    assert exercises_cli.main(["--out", str(student_dir), "--overwrite"]) == 0


def test_the_command_refuses_a_solution_without_a_stub(tmp_path, capsys):
    source = tmp_path / "in"
    source.mkdir()
    cell = {"cell_type": "code", "id": "a", "metadata": {"tags": ["solution"]}, "source": ["x = 1"], "outputs": []}
    notebook = {"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (source / "x.ipynb").write_text(json.dumps(notebook))
    with pytest.raises(SystemExit):
        exercises_cli.main(["--out", str(tmp_path / "out"), "--notebooks", str(source)])
    assert "cell a has a 'solution' tag but no 'stub'" in capsys.readouterr().err


def test_the_command_runs_as_a_module():
    command = [sys.executable, "-m", "diffusion_lesson.exercises", "--help"]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    assert result.stdout.startswith("usage: python -m diffusion_lesson.exercises") and "--overwrite" in result.stdout


@pytest.mark.slow
def test_student_notebooks_run_to_the_end_under_nbval(student_dir):
    """Every student copy runs top to bottom in quick mode, its checkers saying "not yet implemented".

    Two notebooks at a time (pytest-xdist; --dist loadscope keeps each notebook's cells in order in one
    kernel), each kernel on one thread: most of a quick-mode notebook is start-up and small tensors,
    which a second thread does not speed up but a second notebook does.
    """
    env = {**os.environ, "DIFFUSION_LESSON_QUICK": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "--nbval-lax", "--nbval-current-env", "-p", "no:cacheprovider",
               "-n", "2", "--dist", "loadscope",
               "--rootdir", str(student_dir), *sorted(str(p) for p in student_dir.glob("*.ipynb"))]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
