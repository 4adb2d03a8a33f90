"""Training: the simple loss, EMA arithmetic, learning-rate schedule, resume and Ctrl-C, for every kind of model."""

import os
import signal
import sys

import pytest
import torch

from diffusion_lesson.autoencoder import Autoencoder, AutoencoderConfig, AutoencoderObjective
from diffusion_lesson.checkpoints import load_checkpoint
from diffusion_lesson.classifier import ClassifierObjective, MnistClassifier
from diffusion_lesson.data import DATA_ENV_VAR, LabeledImages, data_root, load_mnist
from diffusion_lesson.forward import predict_eps_from_x0
from diffusion_lesson.interrupts import stop_on_sigterm
from diffusion_lesson.losses import DiffusionObjective, eps_errors, min_snr_weight, simple_loss
from diffusion_lesson.models import resume_training
from diffusion_lesson.schedules import make_schedule
from diffusion_lesson.text import VOCABULARY
from diffusion_lesson.training import EMA, TrainConfig, lr_at, save_training, start_training, train
from diffusion_lesson.unet import UNet, UNetConfig

TINY = UNetConfig(base_channels=8, norm_groups=4, attention=True)
needs_mnist = pytest.mark.skipif(
    not (data_root() / "MNIST" / "raw" / "t10k-images-idx3-ubyte").is_file(), reason=f"MNIST not under {DATA_ENV_VAR}"
)


def _fake_data(n: int = 64) -> LabeledImages:
    generator = torch.Generator().manual_seed(0)
    return LabeledImages(torch.rand(n, 1, 28, 28, generator=generator) * 2 - 1, torch.arange(n) % 10)


def _short_run(steps: int = 6, **overrides) -> TrainConfig:
    return TrainConfig(steps=steps, batch_size=8, lr=1e-3, warmup_steps=2, ema_decay=0.9, **overrides)


def _start(model, config, schedule="linear", label_dropout=0.0):
    return start_training(model, DiffusionObjective(make_schedule(schedule), label_dropout), config)


class _Oracle(torch.nn.Module):
    """Knows x0, so it can return the exact eps of x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps."""

    def __init__(self, x0, schedule, num_classes=None):
        super().__init__()
        self.x0, self.schedule, self.seen_labels = x0, schedule, []
        self.config = UNetConfig(num_classes=num_classes)

    def forward(self, xt, t, labels=None):
        self.seen_labels.append(labels)
        return predict_eps_from_x0(xt, t, self.x0, self.schedule)


def test_simple_loss_is_zero_for_the_true_eps_and_one_for_zero():
    schedule = make_schedule("linear", dtype=torch.float64)
    x0 = torch.rand(256, 1, 8, 8, dtype=torch.float64) * 2 - 1
    oracle = _Oracle(x0, schedule)
    assert simple_loss(oracle, x0, schedule, torch.Generator().manual_seed(0)).item() < 1e-12
    zero = simple_loss(lambda xt, t, labels: torch.zeros_like(xt), x0, schedule, torch.Generator().manual_seed(0))
    assert abs(zero.item() - 1) < 5 * (2 / x0.numel()) ** 0.5  # mean of eps^2 over 16384 draws: 1 +- 5 sd


def test_label_dropout_replaces_labels_by_the_no_class_index():
    schedule = make_schedule()
    x0, labels = torch.zeros(4000, 1, 2, 2), torch.arange(4000) % 10
    oracle = _Oracle(x0, schedule, num_classes=10)
    simple_loss(oracle, x0, schedule, torch.Generator().manual_seed(0), labels, label_dropout=0.0)
    simple_loss(oracle, x0, schedule, torch.Generator().manual_seed(0), labels, label_dropout=0.3)
    kept, dropped = oracle.seen_labels
    assert torch.equal(kept, labels)
    is_dropped = dropped == 10
    assert torch.equal(dropped[~is_dropped], labels[~is_dropped])
    assert abs(is_dropped.float().mean().item() - 0.3) < 5 * (0.3 * 0.7 / 4000) ** 0.5


def test_ema_arithmetic_is_exact():
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, decay=0.2)
    torch.testing.assert_close(ema.shadow["weight"], model.weight, rtol=0, atol=0)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    decays = []
    for n in range(4):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(n + 1.0)
        decays.append(ema.current_decay())
        ema.update(model)
        for k, w in model.state_dict().items():
            expected[k] = expected[k] * decays[-1] + w * (1 - decays[-1])
            torch.testing.assert_close(ema.shadow[k], expected[k], rtol=1e-6, atol=1e-6)
    assert decays == [1 / 10, 2 / 11, 0.2, 0.2]  # warm-up (1 + n) / (10 + n), then capped
    assert ema.num_updates == 4


def test_during_its_warm_up_the_ema_averages_steps_whose_mean_age_is_a_tenth_of_the_run():
    # Notebook 03's claim: while (1 + n) / (10 + n) < ema_decay, a weight that equals the step number
    # averages to 0.9 N after N updates, whatever N: the average's mean age is N / 10 steps.
    model = torch.nn.Linear(1, 1, bias=False).double()
    ema = EMA(model, decay=0.999)
    for n in range(1, 2001):
        with torch.no_grad():
            model.weight.fill_(float(n))
        ema.update(model)
        if n in (500, 2000):
            assert ema.shadow["weight"].item() == pytest.approx(0.9 * n, rel=1e-9)


def test_ema_with_decay_zero_copies_the_weights_and_copy_to_loads_them():
    model, other = UNet(TINY), UNet(TINY)
    ema = EMA(model, decay=0.0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)
    ema.copy_to(other)
    for k, v in model.state_dict().items():
        assert torch.equal(other.state_dict()[k], v)


def test_learning_rate_warms_up_then_decays_to_zero():
    config = TrainConfig(steps=110, lr=1e-3, warmup_steps=10)
    assert lr_at(0, config) == pytest.approx(1e-4)
    assert lr_at(9, config) == pytest.approx(1e-3)
    assert lr_at(10, config) == pytest.approx(1e-3)
    assert lr_at(60, config) == pytest.approx(0.5e-3)
    assert lr_at(110, config) == pytest.approx(0.0, abs=1e-12)
    flat = TrainConfig(steps=110, lr=1e-3, warmup_steps=0, decay_lr=False)
    assert lr_at(0, flat) == lr_at(109, flat) == 1e-3


def test_config_round_trip():
    config = TrainConfig(steps=5, lr=3e-3, bf16_autocast=True)
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown TrainConfig keys"):
        TrainConfig.from_dict({"stepz": 3})


@needs_mnist
def test_loss_falls_on_a_small_mnist_subset():
    torch.manual_seed(0)
    images = load_mnist("test").images[:1024]
    data = LabeledImages(images, torch.zeros(1024, dtype=torch.long))
    model = UNet(UNetConfig(base_channels=16, norm_groups=4, attention=False))
    state = train(_start(model, TrainConfig(steps=80, batch_size=32, lr=3e-3, warmup_steps=10)), data, progress=False)
    assert len(state.losses) == 80
    first, last = sum(state.losses[:5]) / 5, sum(state.losses[-20:]) / 20
    assert first > 0.8  # the zero-initialised output predicts eps = 0: loss = E[eps^2] = 1
    assert last < 0.5 * first, (first, last)


def _assert_same_run(a, b):
    assert a.step == b.step
    assert a.losses == b.losses
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k
        assert torch.equal(a.ema.shadow[k], b.ema.shadow[k]), k
    assert torch.equal(a.generator.get_state(), b.generator.get_state())
    for sa, sb in zip(a.optimizer.state.values(), b.optimizer.state.values(), strict=True):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"]) and torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])


def _stop_at(step):
    def callback(state):
        if state.step == step:
            raise KeyboardInterrupt  # what Ctrl-C does, at a known moment

    return callback


def test_resume_continues_the_same_run(tmp_path):
    data = _fake_data()
    torch.manual_seed(1)
    full = train(_start(UNet(TINY), _short_run()), data, progress=False)

    torch.manual_seed(1)
    path = tmp_path / "run.pt"
    first = train(_start(UNet(TINY), _short_run()), data, _stop_at(3), 1, checkpoint_path=path, progress=False)
    assert first.step == 3 and len(first.losses) == 3
    resumed = train(resume_training(path), data, progress=False)
    _assert_same_run(full, resumed)
    assert resumed.ema.num_updates == 6


def test_interrupt_inside_a_step_rolls_the_step_back(tmp_path):
    """Ctrl-C in the middle of a forward pass: that step never happened, and the run resumes exactly."""
    data = _fake_data()
    torch.manual_seed(1)
    full = train(_start(UNet(TINY), _short_run()), data, progress=False)

    torch.manual_seed(1)
    state = _start(UNet(TINY), _short_run())
    calls = []

    def interrupt_on_fourth_forward(module, args):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt

    handle = state.model.register_forward_pre_hook(interrupt_on_fourth_forward)
    train(state, data, progress=False)
    handle.remove()
    assert state.step == 3 and len(state.losses) == 3 and state.ema.num_updates == 3
    assert all(p.grad is None for p in state.model.parameters())
    save_training(state, tmp_path / "run.pt")
    _assert_same_run(full, train(resume_training(tmp_path / "run.pt"), data, progress=False))


@pytest.mark.skipif(sys.platform == "win32", reason="signals to oneself are POSIX")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "kill"])
def test_ctrl_c_or_kill_during_the_update_finishes_the_step_first(signum):
    """A real SIGINT arriving in optimizer.step is held until the EMA and step counter are updated too; so is
    a SIGTERM once stop_on_sigterm was called, as the command-line tools do."""
    before = signal.getsignal(signal.SIGTERM)
    try:
        if signum == signal.SIGTERM:
            stop_on_sigterm()
        handler = signal.getsignal(signum)
        state = _start(UNet(TINY), _short_run())

        def send_signal(optimizer, args, kwargs):
            if state.step == 2:
                os.kill(os.getpid(), signum)

        state.optimizer.register_step_pre_hook(send_signal)
        train(state, _fake_data(), progress=False)
        assert state.step == 3 and state.ema.num_updates == 3 and len(state.losses) == 3
        assert signal.getsignal(signum) is handler  # the handler was put back
    finally:
        signal.signal(signal.SIGTERM, before)


def test_callback_and_periodic_checkpoints(tmp_path):
    seen = []
    path = tmp_path / "ckpt" / "run.pt"
    state = _start(UNet(TINY), _short_run(steps=5))
    train(state, _fake_data(), lambda s: seen.append((s.step, len(s.losses))), 2, path, 2, progress=False)
    assert seen == [(2, 2), (4, 4), (5, 5)]
    assert resume_training(path).step == 5


def test_class_conditional_training_runs():
    config = UNetConfig(base_channels=8, norm_groups=4, num_classes=10)
    state = train(_start(UNet(config), _short_run(steps=2), label_dropout=0.2), _fake_data(), progress=False)
    assert state.step == 2 and all(torch.isfinite(torch.tensor(state.losses)))


def test_a_cosine_run_keeps_its_schedule_through_save_and_resume(tmp_path):
    state = train(_start(UNet(TINY), _short_run(steps=2), schedule="cosine"), _fake_data(), progress=False)
    save_training(state, tmp_path / "run.pt")
    assert load_checkpoint(tmp_path / "run.pt").schedule == {"name": "cosine", "T": 1000}
    assert resume_training(tmp_path / "run.pt").objective.schedule.name == "cosine"


@pytest.mark.parametrize(
    ("kind", "build", "objective"),
    [
        ("autoencoder", lambda: Autoencoder(AutoencoderConfig(widths=(8, 8), norm_groups=4)), AutoencoderObjective()),
        ("classifier", lambda: MnistClassifier(), ClassifierObjective()),
    ],
)
def test_the_same_loop_trains_and_resumes_the_autoencoder_and_the_classifier_exactly(kind, build, objective, tmp_path):
    data = _fake_data()
    torch.manual_seed(1)
    full = train(start_training(build(), objective, _short_run(), kind=kind), data, progress=False)
    torch.manual_seed(1)
    path = tmp_path / "run.pt"
    first = start_training(build(), objective, _short_run(), kind=kind)
    train(first, data, _stop_at(3), 1, checkpoint_path=path, progress=False)
    assert first.step == 3 and load_checkpoint(path).kind == kind
    resumed = train(resume_training(path), data, progress=False)
    assert type(resumed.objective) is type(objective)
    _assert_same_run(full, resumed)
    assert full.losses[-1] < full.losses[0] or kind == "classifier"  # 6 steps: the autoencoder's loss falls


def test_min_snr_weight_is_min_of_snr_and_gamma_over_snr():
    schedule = make_schedule("linear", dtype=torch.float64)
    t = torch.arange(schedule.T)
    weight = min_snr_weight(t, schedule, gamma=5.0)
    snr = schedule.snr
    assert torch.equal(weight[snr <= 5], torch.ones(int((snr <= 5).sum()), dtype=torch.float64))
    torch.testing.assert_close(weight[snr > 5], 5 / snr[snr > 5], rtol=1e-12, atol=0)
    assert 0 < weight.min() < 1e-3 and int((snr > 5).sum()) == int((weight < 1).sum()) > 0


def test_min_snr_objective_reweights_the_same_draws_and_plain_is_simple_loss():
    schedule = make_schedule("linear")
    torch.manual_seed(0)
    model, batch = UNet(TINY), _fake_data(16)
    plain = DiffusionObjective(schedule).loss(model, batch, torch.Generator().manual_seed(3))
    torch.testing.assert_close(plain, simple_loss(model, batch.images, schedule, torch.Generator().manual_seed(3)))
    errors = eps_errors(model, batch.images, schedule, torch.Generator().manual_seed(3))
    weighted = DiffusionObjective(schedule, min_snr_gamma=5.0).loss(model, batch, torch.Generator().manual_seed(3))
    torch.testing.assert_close(weighted, (min_snr_weight(errors.t, schedule, 5.0) * errors.mse).mean())
    huge = DiffusionObjective(schedule, min_snr_gamma=1e30).loss(model, batch, torch.Generator().manual_seed(3))
    torch.testing.assert_close(huge, plain)  # gamma above every SNR: every weight is 1


def test_a_text_model_resumes_exactly_with_the_same_captions(tmp_path):
    """Captions are drawn from the run's generator, so a resumed text run draws the same ones."""
    fake = _fake_data()
    data = LabeledImages(torch.randn(len(fake.images), 4, 7, 7), torch.arange(len(fake.images)) % 90)  # codes
    config = UNetConfig(in_channels=4, image_size=7, patch_size=1, base_channels=8, norm_groups=4,
                        vocabulary=VOCABULARY)  # fmt: skip
    objective = DiffusionObjective(make_schedule("linear"), label_dropout=0.1)
    torch.manual_seed(1)
    full = train(start_training(UNet(config), objective, _short_run(), kind="latent-unet"), data, progress=False)
    torch.manual_seed(1)
    first = start_training(UNet(config), objective, _short_run(), kind="latent-unet")
    train(first, data, _stop_at(3), 1, checkpoint_path=tmp_path / "run.pt", progress=False)
    _assert_same_run(full, train(resume_training(tmp_path / "run.pt"), data, progress=False))
