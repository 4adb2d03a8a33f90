"""python -m diffusion_lesson.sample: see diffusion_lesson/cli/sample.py."""

from diffusion_lesson.cli.args import run
from diffusion_lesson.cli.sample import main

if __name__ == "__main__":
    run(main)
