"""python -m diffusion_lesson.ship: see diffusion_lesson/cli/ship.py."""

from diffusion_lesson.cli.args import run
from diffusion_lesson.cli.ship import main

if __name__ == "__main__":
    run(main)
