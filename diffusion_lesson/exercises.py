"""python -m diffusion_lesson.exercises: see diffusion_lesson/cli/exercises.py."""

from diffusion_lesson.cli.args import run
from diffusion_lesson.cli.exercises import main

if __name__ == "__main__":
    run(main)
