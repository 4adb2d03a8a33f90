"""python -m diffusion_lesson.ship RUN --name NAME: ship a finished run as a pretrained model (maintainers).

Copies the run's EMA weights (no optimizer state) into diffusion_lesson/pretrained/ and records in
manifest.json its sha256, size and how it was made (from the run's sidecar RUN.json).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from diffusion_lesson.checkpoints import CheckpointError
from diffusion_lesson.cli.args import run
from diffusion_lesson.cli.provenance import export_pretrained
from diffusion_lesson.models import COURSE_MODELS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m diffusion_lesson.ship", description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="checkpoint written by python -m diffusion_lesson.train")
    parser.add_argument("--name", required=True, choices=sorted(COURSE_MODELS), help="the course model it replaces")
    args = parser.parse_args(argv)
    try:
        print(json.dumps(export_pretrained(args.run, args.name), indent=2))
    except (CheckpointError, FileNotFoundError) as err:
        parser.error(str(err))
    return 0


if __name__ == "__main__":
    run(main)
