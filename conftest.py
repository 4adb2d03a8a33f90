"""Test-wide settings: notebooks run in quick mode unless DIFFUSION_LESSON_QUICK says otherwise."""

import os

# Set before nbval starts any kernel, which inherits this process's environment.
os.environ.setdefault("DIFFUSION_LESSON_QUICK", "1")
