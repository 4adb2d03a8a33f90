"""How an exercise is judged: run the learner's function on cases with known answers and answer in words.

The checkers themselves, one per exercise, are in ``diffusion_lesson.checkers``; this module holds
what they share. A checker gives ``judge``

* the cases: arguments to call the learner's function with (fresh copies for every call, so a
  function that writes into its inputs cannot spoil the next case);
* the reference: the package's own function, which computes the known answers;
* the classic mistakes: small wrong implementations, each with the message that names it.

``judge`` calls the learner's function on every case. A function that still raises
``NotImplementedError`` gets "not yet implemented"; any other exception gets its message in one
line and the exercise's hint; an answer of the wrong shape gets the shape expected. When every
answer matches the reference the exercise passes. Otherwise each mistake is run on the same cases,
and the first one whose answers the learner's match on *every* case names the error; a mistake
that differs from the right answer only at one step (noise added at t = 0, say) is still told apart,
because it matches the learner's answers everywhere else too. If no mistake matches, the message
says on which case and by how much the answer is off.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from diffusion_lesson.schedules import Schedule, make_schedule

INDEX_HINT = ("an index past the end of the schedule: code steps run from 0 to T - 1, and schedule.alpha_bar[t] is "
              "the paper's alpha_bar_{t+1}; is t off by one (paper time against code time)?")  # fmt: skip


class CheckResult(NamedTuple):
    """The verdict on one exercise: did it pass, and why (or why not) in plain words."""

    passed: bool
    message: str


class Case(NamedTuple):
    """One call with a known answer: ``label`` says which (e.g. "t = 0"), ``args`` are the arguments.

    ``expected`` is the answer when the reference cannot compute it from ``args`` alone (None: it can).
    """

    label: str
    args: tuple
    expected: Any = None


class Mistake(NamedTuple):
    """A classic error: ``fn`` computes what it would answer, ``message`` names it and says what is right."""

    message: str
    fn: Callable[..., Any]


class WrongAnswer(Exception):
    """Raised by a ``canon`` function when an answer has the wrong form; its message goes to the learner."""


def canonical(answer: Any) -> tuple[Tensor, ...]:
    """An answer (tensor, numpy array, number, or a tuple of them) as a tuple of float64 tensors."""
    parts = answer if isinstance(answer, (tuple, list)) else (answer,)
    out = []
    for part in parts:
        if isinstance(part, Tensor):
            value = part.detach().cpu()
        elif isinstance(part, (np.ndarray, np.generic, int, float, complex)) and not isinstance(part, bool):
            value = torch.as_tensor(np.asarray(part))
        else:
            raise WrongAnswer(f"returned {type(part).__name__}, expected a tensor or a number")
        if value.is_complex():
            raise WrongAnswer("returned a complex number: scipy.linalg.sqrtm can give a complex matrix whose "
                              "imaginary part is round-off; take its .real part")  # fmt: skip
        out.append(value.to(torch.float64))
    return tuple(out)


def judge(
    fn: Callable[..., Any],
    cases: Sequence[Case],
    reference: Callable[..., Any],
    mistakes: Sequence[Mistake],
    hint: str,
    canon: Callable[[Any], tuple[Tensor, ...]] = canonical,
    rtol: float = 1e-5,
    atol: float = 1e-6,
) -> CheckResult:
    """The verdict on ``fn``, printed and returned (see the module docstring)."""
    result = _verdict(fn, cases, reference, mistakes, hint, canon, rtol, atol)
    print(("PASSED: " if result.passed else "NOT YET: ") + result.message)
    return result


def _verdict(fn, cases, reference, mistakes, hint, canon, rtol, atol) -> CheckResult:
    name = getattr(fn, "__name__", "your function")
    if not callable(fn):
        return CheckResult(False, f"the checker takes your function itself, got {type(fn).__name__}")
    expected = [canon(reference(*_copied(c.args)) if c.expected is None else c.expected) for c in cases]
    answers = []
    for case, want in zip(cases, expected, strict=True):
        try:
            answer = _call(fn, case.args)
        except NotImplementedError:
            return CheckResult(False, f"{name} is not yet implemented: replace the `raise NotImplementedError` line "
                                      "with your code and run the cell again")  # fmt: skip
        except Exception as err:  # the learner's code may raise anything; report it in one line
            first = str(err).strip().splitlines()[0].rstrip(".") if str(err).strip() else "(no message)"
            extra = INDEX_HINT if isinstance(err, IndexError) else hint
            return CheckResult(False, f"{name} raised {type(err).__name__} on the case {case.label}: {first}. "
                                      f"Hint: {extra}")  # fmt: skip
        try:
            got = canon(answer)
        except WrongAnswer as err:
            return CheckResult(False, f"{name} {err} (case {case.label})")
        if problem := _form_problem(got, want):
            return CheckResult(False, f"{name} {problem} (case {case.label})")
        answers.append(got)
    if all(_close(got, want, rtol, atol) for got, want in zip(answers, expected, strict=True)):
        labels = "; ".join(case.label for case in cases)
        return CheckResult(True, f"{name} matches the package on every case ({labels})")
    for mistake in mistakes:
        if _matches(mistake.fn, cases, answers, canon, rtol, atol):
            return CheckResult(False, f"{name} is wrong: {mistake.message}")
    return CheckResult(False, _how_far(name, cases, answers, expected, hint, rtol, atol))


def _copied(args: tuple) -> tuple:
    return tuple(a.clone() if isinstance(a, Tensor) else a.copy() if isinstance(a, np.ndarray) else a for a in args)


def _call(fn: Callable[..., Any], args: tuple) -> Any:
    with warnings.catch_warnings():  # e.g. numpy's "invalid value in sqrt": the verdict says what went wrong
        warnings.simplefilter("ignore")
        with torch.no_grad():
            return fn(*_copied(args))


def _form_problem(got: tuple[Tensor, ...], want: tuple[Tensor, ...]) -> str | None:
    if len(got) != len(want):
        return f"returned {len(got)} value(s), expected {len(want)}"
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        which = f"value {i + 1} of {len(want)}" if len(want) > 1 else "a value"
        if g.shape != w.shape:
            wanted = "a single number (shape ())" if w.ndim == 0 else f"shape {tuple(w.shape)}"
            return f"returned {which} of shape {tuple(g.shape)}, expected {wanted}"
    return None


def _close(got: tuple[Tensor, ...], want: tuple[Tensor, ...], rtol: float, atol: float) -> bool:
    return all(torch.allclose(g, w, rtol=rtol, atol=atol, equal_nan=True) for g, w in zip(got, want, strict=True))


def _matches(wrong: Callable[..., Any], cases, answers, canon, rtol, atol) -> bool:
    for case, got in zip(cases, answers, strict=True):
        try:
            value = canon(_call(wrong, case.args))
        except Exception:  # a mistake that cannot even run on this case (an index past the end) is not this one
            return False
        if _form_problem(value, got) or not _close(got, value, rtol, atol):
            return False
    return True


def _how_far(name: str, cases, answers, expected, hint: str, rtol: float, atol: float) -> str:
    for case, got, want in zip(cases, answers, expected, strict=True):
        for g, w in zip(got, want, strict=True):
            if torch.isnan(g).any() and not torch.isnan(w).any():
                return f"{name} returned NaN on the case {case.label}. Hint: {hint}"
            if not torch.allclose(g, w, rtol=rtol, atol=atol):
                gap = (g - w).abs().max().item()
                return (f"{name} does not match the package on the case {case.label}: largest difference {gap:.3g}. "
                        f"Hint: {hint}")  # fmt: skip
    return f"{name} does not match the package. Hint: {hint}"


def float64_schedule() -> Schedule:
    """The linear schedule of DDPM, T = 1000, in float64: the cases' known answers carry no float32 round-off."""
    return make_schedule("linear", 1000, dtype=torch.float64)


def randn(seed: int, *shape: int) -> Tensor:
    """Standard normal float64 noise of ``shape``, the same for the same seed."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def per_sample(values: Tensor, x: Tensor) -> Tensor:
    """(B,) -> (B, 1, ..., 1), to broadcast one number per sample over x."""
    return values.reshape(-1, *([1] * (x.ndim - 1)))
