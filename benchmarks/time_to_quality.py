"""Time to quality: sample FID/KID of training recipes against seconds of training on this machine.

Each named recipe trains for a wall-clock budget (--budget-s, training time only) and, at --evals
points evenly spaced in training seconds, samples N digits (DDIM-50, eta 0, seed 0, EMA weights,
float32) and scores them with diffusion_lesson.models.course_fid. The clock stops while evaluating.

The learning rate schedule needs a step count, the budget is in seconds. This script measures it:
the first --calibrate-s seconds of training (inside the lr warm-up for every recipe here) are timed,
steps/second is taken from them, and the run's step count is set so the budget is used up; the
half-cosine decay (training.lr_at) then runs over those steps. The machine may be shared, so the
count is re-estimated every --recalibrate-every steps from the mean rate so far (remaining seconds
x rate + steps done): the run ends within a few steps of the budget and the lr reaches 0 at its
end. The table shows the real seconds. A run also stops, lr not yet at 0, at 1.25 x the budget.

--clock cpu counts the CPU time of this process instead of wall-clock time (time.process_time): with
one torch thread on an idle machine the two agree, but when other jobs share the cores the wall
clock also counts time the process waited, which differs from run to run. Both are recorded.

The EMA weights are scored. Note the package's EMA warm-up, decay = min(ema_decay, (1 + n) / (10 + n))
after n updates: it stays below 0.995 until n = 1790 and below 0.999 until n = 8990, so in short
runs the warm-up, not ema_decay, sets the averaging window (--extra-emas can score other decays).

Results are merged into DIR/results.json (one entry per recipe, a recipe run again is replaced) and
DIR/fid_vs_seconds.png shows FID against training seconds for every recipe in the file. Examples:

    export DIFFUSION_LESSON_DATA=/path/to/data OMP_NUM_THREADS=1
    python benchmarks/time_to_quality.py --recipe baseline --recipe min_snr5 --budget-s 420 --evals 2
    python benchmarks/time_to_quality.py --recipe baseline --budget-s 60 --evals 1 --n 256   # smoke test
    python benchmarks/time_to_quality.py --list
    python benchmarks/time_to_quality.py --replot --out runs/a --merge runs/b   # a's results + b's recipes
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling recipe_options module

from recipe_options import AdditiveSkipUNet, assign_noise, sample_timesteps  # noqa: E402

from diffusion_lesson.checkpoints import load_weights  # noqa: E402
from diffusion_lesson.data import load_mnist, random_batch, to_uint8  # noqa: E402
from diffusion_lesson.forward import q_sample  # noqa: E402
from diffusion_lesson.losses import DiffusionObjective, min_snr_weight  # noqa: E402
from diffusion_lesson.models import course_fid  # noqa: E402
from diffusion_lesson.runtime import make_generator, randn_like  # noqa: E402
from diffusion_lesson.samplers import sample_ddim  # noqa: E402
from diffusion_lesson.schedules import make_schedule  # noqa: E402
from diffusion_lesson.training import EMA, TrainConfig, start_training, update_step  # noqa: E402
from diffusion_lesson.unet import UNet, UNetConfig  # noqa: E402


@dataclass(frozen=True)
class Recipe:
    """A training recipe: UNetConfig and TrainConfig overrides plus the options the package lacks.

    TrainConfig.steps is ignored (the budget sets it). skips: "concat" (the package) or "add";
    loss_weighting: "none" or "min_snr" (gamma min_snr_gamma); t_sampling: "uniform" or
    "logit_normal"; noise: "gaussian" (the package) or "immiscible" (each image gets the batch's
    nearest noise, recipe_options.assign_noise); compile: torch.compile the model in place (compile
    time counts as training);
    clip_x0: evaluate with DDIM that clips x0_pred to [-1, 1] (needed by the cosine schedule).
    """

    model: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    skips: str = "concat"
    loss_weighting: str = "none"
    min_snr_gamma: float = 5.0
    t_sampling: str = "uniform"
    noise: str = "gaussian"
    schedule: str = "linear"
    compile: bool = False
    clip_x0: bool = False


# "baseline" is notebook 03's recipe before these studies: TrainConfig() and UNetConfig() defaults.
# Adopted since: Min-SNR-5 (first study), then batches of 64 (second study, snr5_batch64).
RECIPES: dict[str, Recipe] = {
    "baseline": Recipe(),
    "bf16": Recipe(train={"bf16_autocast": True}),
    "channels_last": Recipe(train={"channels_last": True}),
    "compile": Recipe(compile=True),
    "min_snr5": Recipe(loss_weighting="min_snr", min_snr_gamma=5.0),
    "min_snr5_clip": Recipe(loss_weighting="min_snr", min_snr_gamma=5.0, clip_x0=True),
    "baseline_clip": Recipe(clip_x0=True),
    "add_skips": Recipe(skips="add"),
    "width48": Recipe(model={"base_channels": 48}),
    "no_attention": Recipe(model={"attention": False}),
    "batch64": Recipe(train={"batch_size": 64, "lr": 1e-3}),
    "batch256": Recipe(train={"batch_size": 256, "lr": 3e-3}),
    "warmup50": Recipe(train={"warmup_steps": 50}),
    "ema995": Recipe(train={"ema_decay": 0.995}),
    "logit_normal_t": Recipe(t_sampling="logit_normal"),
    "cosine": Recipe(schedule="cosine", clip_x0=True),
}


def adopted(**changes) -> Recipe:
    """The adopted recipe (Min-SNR-5, scored with x0 clipped as notebook 03 samples) with changes."""
    return replace(Recipe(loss_weighting="min_snr", min_snr_gamma=5.0, clip_x0=True), **changes)


# The second study: one option at a time on top of the adopted recipe (snr5 is its control).
RECIPES |= {
    "snr5": adopted(),
    "snr5_width24": adopted(model={"base_channels": 24}),
    "snr5_width48": adopted(model={"base_channels": 48}),
    "snr5_two_blocks": adopted(model={"blocks_per_level": 2}),
    "snr5_no_attention": adopted(model={"attention": False}),
    "snr5_batch32": adopted(train={"batch_size": 32}),
    "snr5_batch64": adopted(train={"batch_size": 64}),
    "snr5_batch256": adopted(train={"batch_size": 256, "lr": 3e-3}),
    "snr5_lr4e-3": adopted(train={"lr": 4e-3}),
    "snr5_logit_normal_t": adopted(t_sampling="logit_normal"),
    "snr5_cosine": adopted(schedule="cosine"),
    # The winner, batch 64: again with other batches and noise (how noisy FID is), and with the runners-up.
    "snr5_batch64_seed1": adopted(train={"batch_size": 64, "seed": 1}),
    "snr5_batch64_no_attention": adopted(train={"batch_size": 64}, model={"attention": False}),
    "snr5_batch64_two_blocks": adopted(train={"batch_size": 64}, model={"blocks_per_level": 2}),
    "snr5_batch64_lr4e-3": adopted(train={"batch_size": 64, "lr": 4e-3}),
}
# The third study: on top of notebook 03's recipe since the second (batches of 64, two blocks per level).
RECIPES |= {
    "snr5_batch64_two_blocks_immiscible": adopted(
        train={"batch_size": 64}, model={"blocks_per_level": 2}, noise="immiscible"
    ),
}

# The fourth study, on a faster 2-core CPU with bf16 instructions: a third block per level at equal CPU
# seconds, then bf16 autocast against float32 over notebook 03's 8 minutes (wall clock, two threads).
RECIPES |= {
    "snr5_batch64_three_blocks": adopted(train={"batch_size": 64}, model={"blocks_per_level": 3}),
    "snr5_batch64_two_blocks_bf16": adopted(
        train={"batch_size": 64, "bf16_autocast": True}, model={"blocks_per_level": 2}
    ),
}


def parse_recipe(text: str) -> tuple[str, Recipe]:
    """A preset name, or name=JSON of Recipe fields for a one-off (e.g. 'x={"train": {"lr": 1e-3}}')."""
    if "=" in text:
        name, body = text.split("=", 1)
        return name, Recipe(**json.loads(body))
    if text not in RECIPES:
        raise SystemExit(f"unknown recipe {text!r}; presets: {', '.join(RECIPES)}")
    return text, RECIPES[text]


def build_model(recipe: Recipe) -> UNet:
    config = UNetConfig(**recipe.model)
    return AdditiveSkipUNet(config) if recipe.skips == "add" else UNet(config)


def train_step(state, data, recipe: Recipe, extra_emas: list[EMA]) -> torch.Tensor:
    """One step: the package's simple loss (same random draws, same order) plus the recipe's options."""
    cfg, schedule, gen = state.config, state.objective.schedule, state.generator
    x0, _ = random_batch(data, cfg.batch_size, gen)
    if cfg.channels_last:
        x0 = x0.contiguous(memory_format=torch.channels_last)
    t = sample_timesteps(x0.shape[0], schedule.T, recipe.t_sampling, gen, x0.device)
    eps = randn_like(x0, gen)
    if recipe.noise == "immiscible":
        eps = assign_noise(x0, eps)
    xt = q_sample(x0, t, schedule, noise=eps)
    with torch.autocast(x0.device.type, dtype=torch.bfloat16, enabled=cfg.bf16_autocast):
        eps_pred = state.model(xt, t)
    per_sample = (eps_pred.float() - eps).pow(2).flatten(1).mean(1)  # (B,)
    if recipe.loss_weighting == "none":
        loss = per_sample.mean()  # exactly F.mse_loss, as in training.simple_loss
    else:
        loss = (min_snr_weight(t, schedule, recipe.min_snr_gamma) * per_sample).mean()  # the package's weighting
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    update_step(state)  # the package's: grad clip, lr_at(step, config), AdamW, EMA, step += 1
    for ema in extra_emas:
        ema.update(state.model)
    return loss.detach()


@torch.no_grad()
def score(recipe: Recipe, shadow: dict, schedule, n: int, seed: int, clip_x0: bool, batch_size: int) -> dict:
    """Sample n digits with DDIM-50 (eta 0) from the given weights and score them (FID, KID)."""
    model = build_model(recipe)
    load_weights(model, shadow)
    model.eval()
    generator = make_generator(seed)
    start = time.perf_counter()
    x = sample_ddim(model, (n, 1, 28, 28), schedule, 50, 0.0, generator, batch_size=batch_size, clip_x0=clip_x0).x0
    sample_s = time.perf_counter() - start
    nonfinite = int((~torch.isfinite(x)).flatten(1).any(1).sum())
    result = course_fid(to_uint8(x[:, 0]).numpy())
    return {
        "fid": result["fid"],
        "kid": result["kid"],
        "kid_se": result["kid_std_error"],
        "nonfinite_samples": nonfinite,
        "eval_s": round(time.perf_counter() - start, 1),
        "sample_s": round(sample_s, 1),
    }


def run_recipe(name: str, recipe: Recipe, data, args) -> dict:
    torch.manual_seed(0)  # weight init
    model = build_model(recipe)
    base = TrainConfig(**recipe.train)
    objective = DiffusionObjective(make_schedule(recipe.schedule))  # train_step below computes the loss itself
    state = start_training(model, objective, replace(base, steps=10**9), "cpu")  # lr flat until calibrated
    if recipe.compile:
        state.model.compile()  # in place: parameter names (and so the EMAs) stay the same
    extra_emas = [EMA(state.model, d) for d in args.extra_emas]
    params = sum(p.numel() for p in state.model.parameters())
    print(f"\n== {name}: {params / 1e6:.3f}M params, {asdict(recipe)}", flush=True)

    eval_times = [args.budget_s * k / args.evals for k in range(1, args.evals + 1)]
    points, losses, pending = [], [], []
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    train_s, wall_s, cpu_s, steps_target, calib = 0.0, 0.0, 0.0, None, None
    skip_first = 3  # steps left out of the rate (first-call overheads, compilation)
    t_after_skip = None
    status = "ok"
    state.model.train()
    while True:
        start, start_wall, start_cpu = clock(), time.perf_counter(), time.process_time()
        loss = train_step(state, data, recipe, extra_emas)
        train_s += clock() - start
        wall_s += time.perf_counter() - start_wall
        cpu_s += time.process_time() - start_cpu
        pending.append(loss)
        if state.step == skip_first:
            t_after_skip = train_s
        if len(pending) == 50:
            chunk = torch.stack(pending).float()
            pending.clear()
            losses.append(float(chunk.mean()))
            if not torch.isfinite(chunk).all():
                status = f"non-finite loss by step {state.step}"
                print(f"  {status}: stopping", flush=True)
        calibrate = steps_target is None and train_s >= args.calibrate_s
        if calibrate or (steps_target is not None and state.step % args.recalibrate_every == 0):
            # steps/s over the whole run so far (after the first steps): the remaining seconds times
            # that rate is the remaining steps. Redone every few steps, so a change in the machine's
            # load moves the end (and the lr decay) a little instead of missing the budget.
            rate = (state.step - skip_first) / (train_s - t_after_skip)
            steps_target = max(state.step + 1, state.step + round(rate * (args.budget_s - train_s)))
            state.config = replace(base, steps=steps_target)
            if calibrate:
                calib = {"steps": state.step, "seconds": round(train_s, 2), "steps_per_s": round(rate, 3)}
                print(
                    f"  calibrated: {rate:.2f} steps/s ({rate * base.batch_size:.0f} img/s) -> {steps_target} steps",
                    flush=True,
                )
        done = steps_target is not None and state.step >= steps_target
        over = train_s >= 1.25 * args.budget_s
        if over and not done:
            status = f"stopped at 1.25 x budget, step {state.step} of {steps_target}"
        due = len(points) < len(eval_times) - 1 and train_s >= eval_times[len(points)]
        if due or done or over or status.startswith("non-finite"):
            state.model.eval()
            point = {
                "train_s": round(train_s, 1),
                "wall_s": round(wall_s, 1),
                "cpu_s": round(cpu_s, 1),
                "steps": state.step,
                "images": state.step * base.batch_size,
                "lr": state.optimizer.param_groups[0]["lr"],
                **score(
                    recipe, state.ema.state_dict(), state.objective.schedule, args.n, 0, recipe.clip_x0, args.eval_batch
                ),
            }
            points.append(point)
            print(
                f"  eval: {point['train_s']:7.1f} s  step {point['steps']:5d}  FID {point['fid']:7.3f}  "
                f"KID {point['kid']:.5f} +- {point['kid_se']:.5f}  ({point['eval_s']:.0f} s to evaluate)",
                flush=True,
            )
            state.model.train()
        if done or over or status.startswith("non-finite"):
            break

    extras = []
    if status == "ok":
        variants = [(f"ema {e.decay}", e.state_dict(), 0, recipe.clip_x0) for e in extra_emas]
        if args.check_clip:
            variants.append((f"clip_x0={not recipe.clip_x0}", state.ema.state_dict(), 0, not recipe.clip_x0))
        if args.check_seed:
            variants.append(("sampling seed 1", state.ema.state_dict(), 1, recipe.clip_x0))
        for label, shadow, seed, clip in variants:
            extra = {
                "label": label,
                **score(recipe, shadow, state.objective.schedule, args.n, seed, clip, args.eval_batch),
            }
            extras.append(extra)
            print(
                f"  final, {label:18s} FID {extra['fid']:7.3f}  KID {extra['kid']:.5f} +- {extra['kid_se']:.5f}",
                flush=True,
            )
    if args.save_weights:
        torch.save(state.ema.state_dict(), Path(args.out) / f"{name}_ema.pt")
    return {
        "recipe": asdict(recipe),
        "train_config": state.config.to_dict(),
        "model_config": state.model.config.to_dict(),
        "params": params,
        "budget_s": args.budget_s,
        "clock": args.clock,
        "calibration": calib,
        "mean_steps_per_s": round(state.step / train_s, 3),
        "status": status,
        "points": points,
        "final_extras": extras,
        "loss_every_50_steps": losses,
        "n": args.n,
        "threads": torch.get_num_threads(),
        "load_avg_at_end": os.getloadavg(),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def print_table(results: dict) -> None:
    print(f"\n{'recipe':16s} {'train s':>8s} {'steps':>6s} {'images':>8s} {'FID':>8s} {'KID':>9s} {'+- se':>8s}")
    for name, r in results["recipes"].items():
        for p in r["points"]:
            print(
                f"{name:16s} {p['train_s']:8.1f} {p['steps']:6d} {p['images']:8d} {p['fid']:8.3f} "
                f"{p['kid']:9.5f} {p['kid_se']:8.5f}"
            )
        for e in r.get("final_extras", []):
            print(f"{'  ' + e['label']:16s} {'':8s} {'':6s} {'':8s} {e['fid']:8.3f} {e['kid']:9.5f} {e['kid_se']:8.5f}")
    if "real_floor" in results:
        f = results["real_floor"]
        print(f"{'real digits':16s} {'':8s} {'':6s} {'':8s} {f['fid']:8.3f} {f['kid']:9.5f} {f['kid_se']:8.5f}")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, r in results["recipes"].items():
        xs = [p["train_s"] for p in r["points"]]
        ys = [p["fid"] for p in r["points"]]
        (line,) = ax.plot(xs, ys, marker="o", label=name)
        for extra in r.get("final_extras", []):  # the last point sampled the other way: open marker
            if extra["label"].startswith("clip_x0=") and r["points"]:
                marker = "^" if extra["label"] == "clip_x0=True" else "v"
                ax.plot(xs[-1], extra["fid"], marker, mfc="none", color=line.get_color())
    if "real_floor" in results:
        ax.axhline(results["real_floor"]["fid"], color="gray", ls="--", lw=1, label="real digits (floor)")
    ax.set_yscale("log")
    clocks = {r.get("clock", "wall") for r in results["recipes"].values()}
    ax.set_xlabel(f"training seconds ({' / '.join(sorted(clocks))} clock, evaluation excluded)")
    ax.set_ylabel(f"FID (N = {next(iter(results['recipes'].values()))['n']}, DDIM-50, EMA)")
    title = "Sample quality against training time\n(open triangle: the last point, sampled with x0 clipping switched)"
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_final(results: dict, path: Path) -> None:
    """Each recipe's FID at the end of its budget as bars, best first: sampled as the recipe says
    (filled) and with x0 clipping switched (hollow, when --check-clip scored it). Readable where a
    dozen short curves are not."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    for name, r in results["recipes"].items():
        if not r["points"]:
            continue
        switched = [e["fid"] for e in r.get("final_extras", []) if e["label"].startswith("clip_x0=")]
        clipped = r["recipe"]["clip_x0"]
        rows.append((r["points"][-1]["fid"], switched[0] if switched else None, name, clipped))
    rows.sort(key=lambda row: row[0], reverse=True)
    top = 2.5 * max(row[0] for row in rows)
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(rows) + 1.4))
    y = range(len(rows))
    ax.barh(y, [row[0] for row in rows], height=0.4, color="C0", label="as the recipe samples")
    for k, (fid, other, _, clipped) in enumerate(rows):
        ax.text(fid, k, f" {fid:.2f}", va="center", fontsize=7)
        if other is not None:
            label = f"x0 clipping {'off' if clipped else 'on'}"
            ax.barh(k - 0.4, min(other, top), height=0.4, fill=False, ec="C1", label=label if k == 0 else None)
            ax.text(min(other, top), k - 0.4, f" {other:.2f}" if other < top else f" {other:.0f} (cut)", fontsize=7,
                    va="center")  # fmt: skip
    ax.set_yticks(list(y), [row[2] for row in rows], fontsize=8)
    if "real_floor" in results:
        ax.axvline(results["real_floor"]["fid"], color="gray", ls="--", lw=1, label="real digits (floor)")
    budget = {r["budget_s"] for r in results["recipes"].values()}
    ax.set_xlim(0, top * 1.15)
    n = next(iter(results["recipes"].values()))["n"]
    seconds = " / ".join(f"{b:g}" for b in sorted(budget))
    ax.set_xlabel(f"FID after {seconds} training seconds (N = {n}, DDIM-50, EMA; lower is better)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", action="append", help="preset name (repeatable) or name=JSON; default baseline")
    parser.add_argument("--budget-s", type=float, default=480.0, help="training seconds per recipe")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="what a training second is: wall-clock, or CPU time of this process (fairer on a shared machine)",
    )
    parser.add_argument("--evals", type=int, default=3, help="evaluation points, evenly spaced in training seconds")
    parser.add_argument("--n", type=int, default=1000, help="digits sampled per evaluation")
    parser.add_argument("--calibrate-s", type=float, default=20.0, help="seconds timed to set the step count")
    parser.add_argument("--recalibrate-every", type=int, default=20, help="steps between re-estimates of the count")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 leaves the other core free)")
    parser.add_argument("--eval-batch", type=int, default=500, help="sampling batch size")
    parser.add_argument(
        "--extra-emas",
        type=lambda s: [float(x) for x in s.split(",") if x],
        default=[],
        help="comma-separated EMA decays kept besides the recipe's, scored at the end",
    )
    parser.add_argument("--check-clip", action="store_true", help="at the end also score with the other clip_x0")
    parser.add_argument("--check-seed", action="store_true", help="at the end also score with sampling seed 1")
    parser.add_argument("--save-weights", action="store_true", help="save the final EMA weights to DIR")
    parser.add_argument("--out", default="runs/time_to_quality", help="folder for results.json and the plot")
    parser.add_argument("--fresh", action="store_true", help="start a new results.json instead of merging")
    parser.add_argument("--list", action="store_true", help="print the presets and exit")
    parser.add_argument("--replot", action="store_true", help="redraw the plot and table from DIR/results.json")
    parser.add_argument(
        "--merge", action="append", default=[], metavar="OTHER", help="with --replot: add OTHER/results.json's recipes"
    )
    args = parser.parse_args()
    if args.list:
        for name, recipe in RECIPES.items():
            print(f"{name:16s} {asdict(recipe)}")
        return

    if args.replot:
        json_path = Path(args.out) / "results.json"
        results = json.loads(json_path.read_text())
        for other in args.merge:  # e.g. two halves of a study run side by side, one per core
            merged = json.loads((Path(other) / "results.json").read_text())
            if merged.get("real_floor") != results.get("real_floor"):
                raise SystemExit(f"{other}/results.json was scored against another real floor; not merged")
            results["recipes"] |= merged["recipes"]
        if args.merge:
            json_path.write_text(json.dumps(results, indent=1))
        plot(results, Path(args.out) / "fid_vs_seconds.png")
        plot_final(results, Path(args.out) / "fid_at_budget.png")
        print_table(results)
        return
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "results.json"
    results = {"recipes": {}}
    if json_path.exists() and not args.fresh:
        results = json.loads(json_path.read_text())
    results["machine"] = {
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    recipes = [parse_recipe(r) for r in (args.recipe or ["baseline"])]
    data = load_mnist("train", "cpu")
    if "real_floor" not in results or results["real_floor"]["n"] != args.n:
        pick = torch.randperm(data.images.shape[0], generator=torch.Generator().manual_seed(0))[: args.n]
        r = course_fid(to_uint8(data.images[pick, 0]).numpy())
        results["real_floor"] = {"fid": r["fid"], "kid": r["kid"], "kid_se": r["kid_std_error"], "n": args.n}
    for name, recipe in recipes:
        results["recipes"][name] = run_recipe(name, recipe, data, args)
        json_path.write_text(json.dumps(results, indent=1))
        plot(results, out / "fid_vs_seconds.png")
        plot_final(results, out / "fid_at_budget.png")
    print_table(results)
    print(f"\nwrote {json_path}, {out / 'fid_vs_seconds.png'} and {out / 'fid_at_budget.png'}")


if __name__ == "__main__":
    main()
