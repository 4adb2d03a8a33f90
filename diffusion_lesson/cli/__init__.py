"""The course's commands, the top layer of the package: argument parsing lives here and nowhere else.

    python -m diffusion_lesson.train    train a model (--model pixel | latent | autoencoder | classifier)
    python -m diffusion_lesson.sample   write generated digits to an .npz file
    python -m diffusion_lesson.fid      FID and KID of an .npz file of digits
    python -m diffusion_lesson.ship     (maintainers) copy a finished run into the package's pretrained/

Each ``diffusion_lesson/<command>.py`` only starts ``diffusion_lesson.cli.<command>.main``.
"""
