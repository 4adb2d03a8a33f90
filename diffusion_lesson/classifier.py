"""The course's MNIST classifier, whose penultimate layer gives FID's features (notebook 06).

FID needs a feature map that knows what digits look like. Inception-v3, the usual choice, was
trained on ImageNet photos at 299x299; a 28x28 digit blown up to that size is far from anything it
has seen. This small CNN is trained on MNIST itself (python -m diffusion_lesson.classifier), and
the 128 activations before its last layer are the features:

    x (B, 1, 28, 28) in [-1, 1]
      [conv 3x3 -> BatchNorm -> ReLU] x 2, 32 channels, maxpool  -> (B, 32, 14, 14)
      [conv 3x3 -> BatchNorm -> ReLU] x 2, 64 channels, maxpool  -> (B, 64, 7, 7)
      flatten -> linear                                          -> features (B, 128) x feature_scale
      ReLU -> dropout -> linear                                  -> logits (B, 10)

The features are taken before the ReLU, so no unit is ever constant at 0 and the covariance keeps
full rank. ``feature_scale`` is fixed after training so that the mean of |f|^2 / 128 over the
training digits is 1: KID's kernel (x . y / d + 1)^3 assumes features of that size.
BatchNorm and dropout behave differently in train mode, so features are always taken in eval mode
(``features`` switches the network to eval itself).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffusion_lesson.checkpoints import atomic_save, load_weights
from diffusion_lesson.data import LabeledImages, load_mnist, random_batch
from diffusion_lesson.runtime import get_device, make_generator

CLASSIFIER_FORMAT = 1
FEATURE_DIM = 128


class MnistClassifier(nn.Module):
    """Digit classifier; ``features(x)`` is the (B, 128) penultimate activation used by FID."""

    def __init__(self, width: int = 32, feature_dim: int = FEATURE_DIM, dropout: float = 0.3) -> None:
        super().__init__()
        self.config = {"width": width, "feature_dim": feature_dim, "dropout": dropout}

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

        self.body = nn.Sequential(
            *block(1, width), *block(width, width), nn.MaxPool2d(2),  # (B, w, 14, 14)
            *block(width, 2 * width), *block(2 * width, 2 * width), nn.MaxPool2d(2),  # (B, 2w, 7, 7)
            nn.Flatten(), nn.Linear(2 * width * 7 * 7, feature_dim),  # (B, feature_dim)
        )  # fmt: skip
        self.head = nn.Sequential(nn.ReLU(), nn.Dropout(dropout), nn.Linear(feature_dim, 10))
        self.register_buffer("feature_scale", torch.ones(()))  # set by calibrate_feature_scale

    def forward(self, x: Tensor) -> Tensor:
        """Logits (B, 10) for digits x (B, 1, 28, 28) in [-1, 1]."""
        return self.head(self.body(check_digits(x)))

    def embed(self, x: Tensor) -> Tensor:
        """Scaled penultimate activations (B, 128) in whatever mode the network is in; FID uses ``features``."""
        return self.body(check_digits(x)) * self.feature_scale

    @torch.no_grad()
    def features(self, x: Tensor, batch_size: int = 1000) -> Tensor:
        """Penultimate activations (N, 128) float32 of digits x (N, 1, 28, 28) in [-1, 1].

        Puts the network in eval mode first: in train mode BatchNorm would use each batch's own
        statistics and the same digit would get different features in different batches.
        """
        self.eval()
        check_digits(x)
        device = next(self.parameters()).device
        parts = [self.embed(x[i : i + batch_size].to(device)).float().cpu() for i in range(0, x.shape[0], batch_size)]
        return torch.cat(parts) if parts else torch.empty(0, self.config["feature_dim"])


def check_digits(x: Tensor) -> Tensor:
    """Raise a clear error unless x is a float batch (B, 1, 28, 28); returns x."""
    if x.ndim != 4 or tuple(x.shape[1:]) != (1, 28, 28):
        raise ValueError(f"expected digits shaped (B, 1, 28, 28), got {tuple(x.shape)}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"expected float pixels in [-1, 1], got {x.dtype}; convert uint8 with data.to_unit_range")
    return x


def train_classifier(
    data: LabeledImages,
    steps: int = 1500,
    batch_size: int = 128,
    lr: float = 3e-3,
    seed: int = 0,
    progress: bool = True,
) -> MnistClassifier:
    """Train on ``data`` (on its device) with AdamW and a one-cycle learning rate; returns it in eval mode.

    Each batch is shifted by up to 2 pixels (random translation), which is what lifts test
    accuracy above 99% in a couple of epochs.
    """
    from tqdm.auto import tqdm  # here: tqdm.auto picks the notebook widget at call time

    device = data.images.device
    torch.manual_seed(seed)  # the weight initialisation
    model = MnistClassifier().to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    generator = make_generator(seed, device)
    for _ in tqdm(range(steps), disable=not progress, desc="classifier"):
        x, labels = random_batch(data, batch_size, generator)
        loss = F.cross_entropy(model(random_shift(x, 2, generator)), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    return calibrate_feature_scale(model.eval(), data.images)


@torch.no_grad()
def calibrate_feature_scale(model: MnistClassifier, images: Tensor) -> MnistClassifier:
    """Set feature_scale so that the mean of |features|^2 / feature_dim over ``images`` is 1; returns the model."""
    model.feature_scale.fill_(1.0)
    features = model.features(images).double()
    model.feature_scale.fill_(float(features.pow(2).mean().rsqrt()))
    return model


def random_shift(x: Tensor, max_shift: int, generator: torch.Generator | None = None) -> Tensor:
    """Translate each image by its own random (dy, dx) in [-max_shift, max_shift], filling with background."""
    B, _, H, W = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)  # background is -1 (black)
    offsets = torch.randint(0, 2 * max_shift + 1, (2, B), generator=generator, device=x.device)
    rows = offsets[0].view(B, 1, 1) + torch.arange(H, device=x.device).view(1, H, 1)  # (B, H, 1)
    cols = offsets[1].view(B, 1, 1) + torch.arange(W, device=x.device).view(1, 1, W)  # (B, 1, W)
    batch = torch.arange(B, device=x.device).view(B, 1, 1)
    return padded[batch, 0, rows, cols].unsqueeze(1)  # (B, 1, H, W)


@torch.no_grad()
def accuracy(model: MnistClassifier, data: LabeledImages, batch_size: int = 1000) -> float:
    """Fraction of ``data`` classified correctly, in eval mode."""
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, data.images.shape[0], batch_size):
        logits = model(data.images[i : i + batch_size].to(device))
        correct += int((logits.argmax(1).cpu() == data.labels[i : i + batch_size].cpu()).sum())
    return correct / data.images.shape[0]


def save_classifier(path: str | Path, model: MnistClassifier, test_accuracy: float) -> Path:
    """Write the weights (atomically), config and measured test accuracy; loadable with weights_only."""
    payload = {
        "format": CLASSIFIER_FORMAT,
        "kind": "mnist-classifier",
        "config": dict(model.config),
        "weights": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "test_accuracy": float(test_accuracy),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(payload, path)
    return path


def load_classifier(path: str | Path, device: torch.device | str = "cpu") -> MnistClassifier:
    """A classifier saved by ``save_classifier``, on ``device``, in eval mode."""
    raw = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(raw, dict) or raw.get("kind") != "mnist-classifier" or raw.get("format") != CLASSIFIER_FORMAT:
        raise ValueError(f"{path} is not a diffusion-lesson MNIST classifier of format {CLASSIFIER_FORMAT}")
    model = MnistClassifier(**raw["config"])
    load_weights(model, raw["weights"])
    return model.to(device).eval()


def load_course_classifier(device: torch.device | str = "cpu") -> MnistClassifier:
    """The shipped classifier (sha256-checked). FID numbers are comparable only with these same features."""
    from diffusion_lesson.pretrained import pretrained_path  # here: pretrained imports the model modules

    return load_classifier(pretrained_path("mnist-classifier"), device)


def main(argv: list[str] | None = None) -> int:
    from diffusion_lesson.pretrained import PRETRAINED_DIR, record_in_manifest, runs_dir

    parser = argparse.ArgumentParser(prog="python -m diffusion_lesson.classifier", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500, help="optimizer steps of batch 128 (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    parser.add_argument("--device", default=None, help="cpu, cuda or mps (default: the best available)")
    parser.add_argument("--out", type=Path, default=None, help="default: runs/mnist-classifier.pt")
    parser.add_argument("--ship", action="store_true", help="write into the package's pretrained/ and its manifest")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be a positive integer, got {args.steps}")
    out = PRETRAINED_DIR / "mnist_classifier.pt" if args.ship else args.out or runs_dir() / "mnist-classifier.pt"
    device = get_device(args.device)
    start = time.perf_counter()
    model = train_classifier(load_mnist("train", device), steps=args.steps, seed=args.seed)
    seconds = time.perf_counter() - start
    test_accuracy = accuracy(model, load_mnist("test", device))
    save_classifier(out, model, test_accuracy)
    print(f"test accuracy {test_accuracy:.4f} after {args.steps} steps ({seconds:.0f} s on {device}); saved {out}")
    if args.ship:
        record = {
            "command": "python -m diffusion_lesson.classifier " + shlex.join(argv),
            "steps": args.steps,
            "test_accuracy": round(test_accuracy, 4),
            "wall_time_s": round(seconds, 1),
            "device": f"{device.type} ({torch.get_num_threads()} threads)",
            "torch": torch.__version__,
        }
        print(json.dumps(record_in_manifest("mnist-classifier", out, record), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
