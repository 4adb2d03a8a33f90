"""Re-measure every README FID row of a shipped model after it is replaced, and record each in the manifest.

Shipping a model (python -m diffusion_lesson.ship) drops the FIDs recorded for the file it replaces. This
reads the README's table "FID of the shipped models", and for each row of --model runs the README's own
commands: `python -m diffusion_lesson.sample` (one thread per job, --jobs at a time, the dearest first),
then `python -m diffusion_lesson.fid FILE --record MODEL`, one at a time so that no two write the manifest
at once. --only and --skip choose rows by their label (to run the dearest on its own). --extra-seeds
samples the unclipped N = 1,000 DDIM rows again with other seeds and scores them without recording (the
README quotes them beside the table). --class-mix also scores real digits drawn with each sample's mix of
digits (fid --class-mix). Each sampler's output is kept beside its samples, FILE.sample.log, and each
fid's, FILE.txt. Example:

    export DIFFUSION_LESSON_DATA=/path/to/data
    python benchmarks/record_shipped_fid.py --model mnist-unet --jobs 2 --extra-seeds 1 2 --out runs/fid
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
# | model (`name`) | sampler | N | FID | KID +- standard error |: rows of real digits name no model
ROW = re.compile(r"^\| [^|]*\(`(mnist-[a-z-]+)`\) \| ([^|]+) \| ([\d,]+) \| ([\d.]+) \| (-?[\d.]+) \+- ([\d.]+) \|$")
SAMPLER = re.compile(r"^(?:DDPM-1000|DDIM-(\d+), eta ([\d.]+))(, x0 clipped)?$")
MODEL_FLAG = {"mnist-unet": "pixel", "mnist-latent-unet": "latent"}


@dataclass(frozen=True)
class Row:
    model: str
    sampler: str  # as the README and the manifest write it: "DDIM-50, eta 0, x0 clipped"
    n: int
    seed: int = 0

    @property
    def label(self) -> str:
        """The manifest's name for this measurement, as `fid --record` stores it: "DDPM-1000, seed 0, N 1000"."""
        return f"{self.sampler}, seed {self.seed}, N {self.n}"

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", f"{self.model} {self.sampler} seed {self.seed} n {self.n}".lower())

    def wanted(self, only: str, skip: list[str]) -> bool:
        label = f"{self.model} {self.label}"
        return only in label and not any(text in label for text in skip)

    @property
    def cost(self) -> int:
        """Network evaluations, to start the dearest rows first."""
        match = SAMPLER.match(self.sampler)
        return self.n * (1000 if match.group(1) is None else int(match.group(1)))


def fid_table(text: str) -> dict[Row, tuple[str, str, str]]:
    """The README's table "FID of the shipped models": each row that names a shipped model, and the FID,
    KID and KID's standard error it prints, as printed."""
    section = text.split("## FID of the shipped models", 1)[1].split("\n## ", 1)[0]
    matches = (ROW.match(line) for line in section.splitlines())
    return {Row(m[1], m[2], int(m[3].replace(",", ""))): (m[4], m[5], m[6]) for m in matches if m}


def sample_args(row: Row, out: Path) -> list[str]:
    """The `python -m diffusion_lesson.sample` arguments that make the row's digits."""
    match = SAMPLER.match(row.sampler)
    if match is None:
        raise ValueError(f"unknown sampler in the README's FID table: {row.sampler!r}")
    steps, eta, clipped = match.groups()
    args = ["--model", MODEL_FLAG[row.model], "--n", str(row.n), "--seed", str(row.seed), "--out", str(out)]
    args += ["--sampler", "ddpm"] if steps is None else ["--sampler", "ddim", "--steps", steps, "--eta", eta]
    return args + (["--clip-x0"] if clipped else [])


def run(module: str, args: list[str], threads: int, log: Path | None = None) -> subprocess.CompletedProcess:
    """`python -m module args` on `threads` threads; its output captured, or written to `log` if given (a
    file outlives this script: a sampler whose output went to a pipe dies when this script is stopped)."""
    command, env = [sys.executable, "-m", module, *args], {**os.environ, "OMP_NUM_THREADS": str(threads)}
    if log is None:
        return subprocess.run(command, env=env, capture_output=True, text=True)
    with log.open("w", encoding="utf-8") as out:
        return subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, choices=sorted(MODEL_FLAG), action="append", help="repeatable")
    parser.add_argument("--jobs", type=int, default=2, help="samplers at a time, one thread each (default 2)")
    parser.add_argument("--extra-seeds", type=int, nargs="*", default=[], help="N = 1,000 DDIM rows again")
    parser.add_argument("--out", type=Path, default=Path("runs/fid"), help="folder for the .npz files")
    parser.add_argument("--only", default="", help="only rows whose label contains this, e.g. DDPM")
    parser.add_argument(
        "--skip", action="append", default=[], help="leave out rows whose label contains this (repeatable)"
    )
    parser.add_argument("--class-mix", action="store_true", help="also score real digits with each sample's mix")
    parser.add_argument("--dry-run", action="store_true", help="print the sample commands only")
    args = parser.parse_args(argv)
    rows = [row for row in fid_table(README.read_text(encoding="utf-8")) if row.model in args.model]
    reseeded = [r for r in rows if r.n == 1000 and "DDIM" in r.sampler and "clipped" not in r.sampler]
    extra = [Row(r.model, r.sampler, r.n, seed) for r in reseeded for seed in args.extra_seeds]
    jobs = sorted((r for r in rows + extra if r.wanted(args.only, args.skip)), key=lambda r: -r.cost)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.dry_run:
        for row in jobs:
            print("python -m diffusion_lesson.sample " + " ".join(sample_args(row, args.out / f"{row.slug}.npz")))
        return 0
    start, results, failed = time.perf_counter(), {}, False
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = {}
        for row in jobs:
            path = args.out / f"{row.slug}.npz"
            log = path.with_suffix(".sample.log")
            futures[pool.submit(run, "diffusion_lesson.sample", sample_args(row, path), 1, log)] = (row, path)
        for future in as_completed(futures):
            row, path = futures[future]
            done = future.result()
            if done.returncode != 0:
                log = path.with_suffix(".sample.log").read_text(encoding="utf-8")
                print(f"FAILED to sample {row}:\n{log[-2000:]}", flush=True)
                failed = True
                continue
            record = ["--record", row.model] if row.seed == 0 else []
            mix = ["--class-mix"] if args.class_mix else []
            scored = run("diffusion_lesson.fid", [str(path), *record, *mix], 1)
            path.with_suffix(".txt").write_text(scored.stdout + scored.stderr)
            fid = re.search(r"^FID: ([\d.]+)$", scored.stdout, re.MULTILINE)
            floor = re.search(r"^real training digits with the sample's mix: FID ([\d.]+)", scored.stdout, re.MULTILINE)
            if scored.returncode != 0 or fid is None:
                print(f"FAILED to score {row}:\n{scored.stdout}{scored.stderr}", flush=True)
                failed = True
                continue
            results[row] = float(fid.group(1))
            elapsed = time.perf_counter() - start
            print(f"{elapsed:7.0f} s  {row.model}  {row.label}: "
                  f"FID {results[row]:.2f}{' (recorded)' if record else ''}"
                  f"{f'; its mix: {float(floor.group(1)):.2f}' if floor else ''}", flush=True)  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
