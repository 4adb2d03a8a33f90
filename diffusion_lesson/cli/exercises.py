"""python -m diffusion_lesson.exercises --out DIR: student copies of the notebooks, every solution replaced by its stub.

How an exercise sits in a notebook: its solution is one code cell tagged ``solution`` (cell
metadata ``"tags": ["solution"]``) whose metadata ``"stub"`` holds the learner's version, as a list
of source lines like the cell's own: the same function with its body replaced by a hint and
``raise NotImplementedError``, followed by the same checker call. The committed notebooks show the
solutions and are what CI executes; the stubs travel with them, out of sight. No later cell may use
what a solution defines: from the checker on, notebooks call the package, so a student copy runs to
the end, its checkers answering "not yet implemented".

A student copy is the notebook with each solution cell's source replaced by its stub, the
``solution`` tag replaced by ``exercise``, the ``"stub"`` key removed and every output stripped: the
solution's code is kept nowhere in it.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

from diffusion_lesson.cli.args import check_writable, fail

COURSE_NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
SOLUTION, STUB, EXERCISE = "solution", "stub", "exercise"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m diffusion_lesson.exercises", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the student notebooks (created if needed)")
    parser.add_argument("--notebooks", type=Path, default=COURSE_NOTEBOOKS,
                        help="folder of solution notebooks (default: the course's notebooks/)")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace student notebooks already in --out")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    sources = solution_notebooks(parser, args.notebooks)
    check_output(parser, args.out, args.notebooks, [p.name for p in sources], args.overwrite)
    written = []
    for path in sources:
        try:
            notebook = student_notebook(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, KeyError, TypeError) as err:  # bad JSON, or a cell that breaks the convention above
            fail(parser, f"{path}: {err}")
        written.append((path.name, sum(EXERCISE in c["metadata"].get("tags", []) for c in notebook["cells"])))
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / path.name).write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {len(written)} student notebooks to {args.out}, {sum(n for _, n in written)} exercises in all:")
    for name, count in written:
        print(f"  {name}: {count} exercise{'s' if count != 1 else ''}")
    return 0


def solution_notebooks(parser: argparse.ArgumentParser, folder: Path) -> list[Path]:
    """The .ipynb files in ``folder``, sorted; refuses a folder that is missing or holds none."""
    if not folder.is_dir():
        parser.error(f"--notebooks: no folder at {folder}; pass the folder that holds the course's notebooks")
    paths = sorted(folder.glob("*.ipynb"))
    if not paths:
        parser.error(f"--notebooks: no .ipynb files in {folder}")
    return paths


def check_output(parser: argparse.ArgumentParser, out: Path, notebooks: Path, names: list[str], overwrite: bool):
    """Refuse an --out that is a file, unwritable, the solutions' own folder, or holds these notebooks already."""
    if out.exists() and not out.is_dir():
        parser.error(f"--out: {out} is a file, not a folder")
    if out.exists() and out.resolve() == notebooks.resolve():
        parser.error(f"--out: {out} is the folder of the solution notebooks; student copies would replace them")
    check_writable(parser, "--out", out)
    present = [name for name in names if (out / name).exists()]
    if present and not overwrite:
        parser.error(f"--out: {out} already holds {', '.join(present)}; pass --overwrite to replace them")


def student_notebook(notebook: dict) -> dict:
    """A copy of ``notebook`` with every solution cell replaced by its stub and every output stripped."""
    student = copy.deepcopy(notebook)
    for cell in student["cells"]:
        metadata = cell.setdefault("metadata", {})
        tags = metadata.get("tags", [])
        where = f"cell {cell.get('id', '?')}"
        if (SOLUTION in tags) != (STUB in metadata):
            raise ValueError(f"{where} has a {SOLUTION!r} tag but no {STUB!r} in its metadata, or the other way round")
        if SOLUTION in tags:
            if cell["cell_type"] != "code":
                raise ValueError(f"{where} is tagged {SOLUTION!r} but is a {cell['cell_type']} cell, not code")
            stub = metadata.pop(STUB)
            cell["source"] = stub if isinstance(stub, list) else str(stub).splitlines(keepends=True)
            metadata["tags"] = [EXERCISE if tag == SOLUTION else tag for tag in tags]
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    return student
