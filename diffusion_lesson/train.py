"""python -m diffusion_lesson.train: see diffusion_lesson/cli/train.py."""

from diffusion_lesson.cli.args import run
from diffusion_lesson.cli.train import main

if __name__ == "__main__":
    run(main)
