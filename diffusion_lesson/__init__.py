"""diffusion-lesson: the tested helpers behind the course's notebooks.

Notation (DDPM, Ho et al. 2020), paper symbol -> code name:

    beta_t                  beta            noise variance added at step t
    alpha_t = 1 - beta_t    alpha
    bar-alpha_t             alpha_bar       prod of alpha up to t (DDIM's "alpha_t" is our alpha_bar)
    bar-alpha_{t-1}         alpha_bar_prev  with alpha_bar_prev[0] = 1
    SNR(t)                  snr             alpha_bar / (1 - alpha_bar)
    x_0, x_t, x_{t-1}       x0, xt, x_prev
    epsilon                 eps             the Gaussian noise in x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps
    epsilon_theta(x_t, t)   eps_pred        the network's prediction of eps
    hat-x_0                 x0_pred         x0 recovered from (x_t, eps_pred)
    tilde-mu_t, tilde-beta_t posterior_mean, posterior_var   of q(x_{t-1} | x_t, x0)

Time convention, stated once: time is 0-based. Code step t in [0, T) is paper step t + 1, so
beta[0] is the paper's beta_1, x0 is the data, and q_step(x0, t=0) gives the first noisy x.
"""

__version__ = "0.1.0"
