"""python -m diffusion_lesson.fid: see diffusion_lesson/cli/fid.py."""

from diffusion_lesson.cli.args import run
from diffusion_lesson.cli.fid import main

if __name__ == "__main__":
    run(main)
