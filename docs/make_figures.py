"""Execute notebooks and save their figures as docs/figures/<notebook>-<k>.png for the README.

Usage: python docs/make_figures.py [--executed DIR] notebooks/01_forward_process.ipynb [...]
Runs each notebook top to bottom in a fresh kernel (full mode unless DIFFUSION_LESSON_QUICK=1).
--executed DIR also keeps each executed notebook there, to read what its cells printed against the prose.
"""

import argparse
import base64
from pathlib import Path

import nbformat
from nbclient import NotebookClient

FIGURES = Path(__file__).parent / "figures"


def main(paths: list[str], executed: Path | None = None) -> None:
    FIGURES.mkdir(exist_ok=True)
    for path in map(Path, paths):
        notebook = nbformat.read(path, as_version=4)
        NotebookClient(notebook, timeout=1800, resources={"metadata": {"path": str(path.parent)}}).execute()
        images = [
            output["data"]["image/png"]
            for cell in notebook.cells
            if cell.cell_type == "code"
            for output in cell.get("outputs", [])
            if "image/png" in output.get("data", {})
        ]
        for k, image in enumerate(images):
            (FIGURES / f"{path.stem}-{k}.png").write_bytes(base64.b64decode(image))
        print(f"{path}: {len(images)} figures")
        if executed is not None:
            executed.mkdir(parents=True, exist_ok=True)
            nbformat.write(notebook, executed / path.name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", help="notebooks to execute")
    parser.add_argument("--executed", type=Path, help="also keep each executed notebook in this folder")
    args = parser.parse_args()
    main(args.notebooks, args.executed)
