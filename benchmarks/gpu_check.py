"""Check the CUDA path of the torch backend in one command and write a markdown report.

    python benchmarks/gpu_check.py [--quick] [--out DIR]

On a machine where ``torch.cuda.is_available()``, four steps run one after the other, each
as a subprocess with a timeout (its stdout and stderr kept in DIR/logs/):

1. cuda tests — ``pytest tests/test_torch_backend.py tests/test_gpu_check.py -k cuda``: the
   tests that run on the GPU (training on CUDA, the CUDA table against the CPU table, bf16
   training with a float64 evaluation, the gpu preset's table on the card);
2. bench — ``benchmarks/bench_torch.py --device cuda`` (``--quick`` with --quick): sampled
   tokens per second, exact-table extraction and training rounds per second;
3. transformer, cpu preset — ``experiments/transformer_xpo.py --quick --device cuda``: the
   README's experiment (token_needle(4, 3), 337k parameters), 2 seeds × 12 rounds;
4. transformer, gpu preset — ``experiments/transformer_xpo.py --preset gpu --device cuda``,
   shortened: 1 seed, 10 rounds, at most 400 distillation steps (token_needle(8, 5), 32,768
   responses, 9.5M parameters, bf16 training, exact float64 evaluation).

The whole check has a budget of 300 s (150 s with --quick: a shorter bench and shorter
runs); each step gets at most its own timeout and what is left of the budget. The report,
DIR/gpu_check.md, is written even when a step fails: the GPU's name and memory, the torch,
CUDA and cuDNN versions, each step's result and duration, the bench's throughput table and
each experiment's regret table (from its summary.csv) with its printed timings and peak
CUDA memory. Exit status 0 when every step passed, 1 otherwise.

Without CUDA (torch not installed, a CPU build, or no GPU visible) nothing runs: the report
says that CUDA is unavailable and lists the commands the check would have run, and the
exit status is 0 (the test suite runs the script this way on CPU machines).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = {False: 300.0, True: 150.0}  # the whole check, by --quick
MIN_STEP_S = 15.0  # a step is not started with less time than this left
SUMMARY_COLUMNS = ["group", "label", "runs", "queries_median", "reached", "final_regret_rel", "best_regret_rel"]


@dataclass
class Step:
    name: str
    title: str
    args: list[str]
    timeout_s: float
    out_dir: str | None = None  # an experiment's --out, relative to the check's --out
    result: str = "not run"
    seconds: float = 0.0
    limit_s: float = 0.0
    stdout: str = ""
    stderr: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.result == "passed"

    def command(self) -> str:
        return shlex.join(["python", *self.args])


def plan(out: Path, quick: bool) -> list[Step]:
    """The steps of the check, with their per-step timeouts (seconds)."""
    figures = str(out / "figures")
    preset_short = ["--seeds", "1", "--rounds", "4" if quick else "10", "--eval-every", "2" if quick else "5",
                    "--distill-steps", "100" if quick else "400"]
    if quick:
        preset_short += ["--tabular", "logits"]
    return [
        Step("cuda_tests", "CUDA tests",
             ["-m", "pytest", "tests/test_torch_backend.py", "tests/test_gpu_check.py", "-k", "cuda", "-q", "-s",
              "-p", "no:cacheprovider"], timeout_s=120),
        Step("bench", "Throughputs: bench_torch.py --device cuda",
             ["benchmarks/bench_torch.py", "--device", "cuda", *(["--quick"] if quick else [])],
             timeout_s=90 if quick else 150),
        Step("transformer_cpu_preset", "Transformer experiment, cpu preset (quick)",
             ["experiments/transformer_xpo.py", "--quick", "--device", "cuda",
              *(["--seeds", "1", "--rounds", "4"] if quick else []),
              "--out", str(out / "transformer_xpo"), "--figures", figures],
             timeout_s=60 if quick else 90, out_dir="transformer_xpo"),
        Step("transformer_gpu_preset", "Transformer experiment, gpu preset (short)",
             ["experiments/transformer_xpo.py", "--preset", "gpu", "--device", "cuda", *preset_short,
              "--out", str(out / "transformer_xpo_gpu"), "--figures", figures],
             timeout_s=90 if quick else 150, out_dir="transformer_xpo_gpu"),
    ]


# ----------------------------------------------------------------------------- environment
def cuda_status() -> tuple[bool, str, object]:
    """(available, why not / device name, the torch module or None)."""
    try:
        import torch
    except ImportError as error:
        return False, f"torch cannot be imported ({error})", None
    if not torch.cuda.is_available():
        build = "a CPU build of torch" if torch.version.cuda is None else f"torch built for CUDA {torch.version.cuda}"
        return False, f"torch.cuda.is_available() is False ({build}, torch {torch.__version__}; no usable GPU)", torch
    return True, torch.cuda.get_device_name(0), torch


def nvidia_smi() -> str:
    try:
        result = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return "not available"
    return result.stdout.strip() or "not available"


def git_commit() -> str:
    try:
        result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip() or "unknown"


def environment_rows(torch) -> list[tuple[str, str]]:
    props = torch.cuda.get_device_properties(0)
    return [
        ("GPU", f"{torch.cuda.get_device_name(0)} ({props.total_memory / 2**30:.1f} GiB, compute capability "
                f"{props.major}.{props.minor}, {torch.cuda.device_count()} visible)"),
        ("nvidia-smi (name, driver, memory)", nvidia_smi()),
        ("torch", torch.__version__),
        ("CUDA (torch build)", str(torch.version.cuda)),
        ("cuDNN", str(torch.backends.cudnn.version())),
        ("bf16 supported", str(torch.cuda.is_bf16_supported())),
        ("float32 matmul precision", torch.get_float32_matmul_precision()),
        ("Python", platform.python_version()),
        ("CPU cores", str(os.cpu_count())),
        ("commit", git_commit()),
    ]


# ----------------------------------------------------------------------------- running
def run_step(step: Step, logs: Path, limit_s: float) -> None:
    """Run ``step`` with a timeout of ``limit_s`` seconds, in its own process group (killed
    whole on timeout); stdout and stderr go to logs/<name>.out and .err."""
    step.limit_s = limit_s
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    out_path, err_path = logs / f"{step.name}.out", logs / f"{step.name}.err"
    print(f"gpu_check: {step.title}: {step.command()} (timeout {limit_s:.0f} s)", flush=True)
    start = time.perf_counter()
    with open(out_path, "w") as out, open(err_path, "w") as err:
        process = subprocess.Popen([sys.executable, *step.args], cwd=ROOT, env=env, stdout=out, stderr=err,
                                   start_new_session=True)
        try:
            code = process.wait(timeout=limit_s)
            step.result = "passed" if code == 0 else f"failed (exit status {code})"
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            step.result = f"timed out after {limit_s:.0f} s"
    step.seconds = time.perf_counter() - start
    step.stdout, step.stderr = out_path.read_text(errors="replace"), err_path.read_text(errors="replace")
    print(f"gpu_check: {step.title}: {step.result}, {step.seconds:.1f} s", flush=True)


def run_all(steps: list[Step], logs: Path, budget_s: float, min_step_s: float = MIN_STEP_S) -> None:
    """Run the steps in order, each within its timeout and what is left of ``budget_s``;
    a step is not started with less than ``min_step_s`` left."""
    start = time.perf_counter()
    for step in steps:
        left = budget_s - (time.perf_counter() - start)
        if left < min_step_s:
            step.result = f"not run (the check's {budget_s:.0f} s budget was spent)"
            print(f"gpu_check: {step.title}: {step.result}", flush=True)
            continue
        run_step(step, logs, min(step.timeout_s, left))


# ----------------------------------------------------------------------------- report
def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines


def fenced(text: str, last: int | None = None) -> list[str]:
    lines = text.rstrip("\n").splitlines()
    if last is not None and len(lines) > last:
        lines = [f"... ({len(lines) - last} lines above, see the log)", *lines[-last:]]
    return ["```", *lines, "```"] if lines else ["(no output)"]


def blocks(text: str) -> list[str]:
    """Printed text as markdown: each run of table rows ("| … |") and each other line its own
    block, blank lines between."""
    lines: list[str] = []
    for line in (line.rstrip() for line in text.splitlines()):
        if not line:
            continue
        if lines and not (line.startswith("|") and lines[-1].startswith("|")):
            lines.append("")
        lines.append(line)
    return lines + [""]


def summary_table(path: Path) -> list[str]:
    """The regret table of an experiment's summary.csv, as markdown."""
    import csv

    if not path.exists():
        return [f"(no {path.name})"]
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = [c for c in SUMMARY_COLUMNS if rows and c in rows[0]]

    def cell(value: str) -> str:
        if value in ("", "nan"):
            return "–"
        try:
            number = float(value)
        except ValueError:
            return value
        return f"{number:.3g}" if number == number else "–"

    return markdown_table(columns, [[cell(row[c]) for c in columns] for row in rows])


def step_section(step: Step, out: Path) -> list[str]:
    lines = [f"## {step.title}", "", f"`{step.command()}` — **{step.result}**, {step.seconds:.1f} s", ""]
    if step.result.startswith("not run"):
        return lines
    if not step.passed:
        lines += ["stderr (end):", "", *fenced(step.stderr, last=40), "", "stdout (end):", "",
                  *fenced(step.stdout, last=40), ""]
    if step.name == "cuda_tests":
        lines += fenced(step.stdout, last=25) + [""]
    elif step.name == "bench" and step.passed:
        lines += blocks(step.stdout)
    elif step.out_dir is not None and step.passed:
        lines += ["Regret table (summary.csv: queries to 10% of π_ref's regret, final and best regret relative "
                  "to π_ref's):", "", *summary_table(out / step.out_dir / "summary.csv"), "",
                  "Printed by the experiment (timings, parameters, peak CUDA memory, final regret per seed):", "",
                  *fenced(step.stdout), ""]
        figures = sorted((out / "figures").glob("transformer_xpo_gpu.png" if "gpu" in step.name else
                                                "transformer_xpo.png"))
        lines += [f"![{step.title}](figures/{figure.name})" for figure in figures] + [""]
    return lines


def write_report(out: Path, steps: list[Step], torch, args, total_s: float) -> Path:
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    failed = [s for s in steps if not s.passed]
    verdict = f"{len(failed)} of {len(steps)} steps failed" if failed else "all steps passed"
    lines = [
        "# GPU check of the torch backend",
        "",
        f"{now} on `{platform.node()}`: `python benchmarks/gpu_check.py{' --quick' if args.quick else ''} "
        f"--out {args.out}` — **{verdict}**, "
        f"{total_s:.0f} s in all (budget {BUDGET_S[args.quick]:.0f} s).",
        "",
        *markdown_table(["", ""], [[k, v] for k, v in environment_rows(torch)]),
        "",
        "## Steps",
        "",
        *markdown_table(["step", "result", "seconds", "timeout (s)", "command"],
                        [[s.title, s.result, f"{s.seconds:.1f}", f"{s.limit_s:.0f}", f"`{s.command()}`"]
                         for s in steps]),
        "",
        "Logs: `logs/<step>.out` and `logs/<step>.err` next to this report.",
        "",
    ]
    for step in steps:
        lines += step_section(step, out)
    report = out / "gpu_check.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def write_unavailable_report(out: Path, reason: str, steps: list[Step], args) -> Path:
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# GPU check of the torch backend: CUDA unavailable",
        "",
        f"{now} on `{platform.node()}` (Python {platform.python_version()}): **CUDA is not available** — "
        f"{reason}. Nothing was run; the check exits with status 0.",
        "",
        "On a machine with CUDA, `python benchmarks/gpu_check.py"
        f"{' --quick' if args.quick else ''} --out {args.out}` runs, within a budget of "
        f"{BUDGET_S[args.quick]:.0f} s:",
        "",
        *markdown_table(["step", "timeout (s)", "command"],
                        [[s.title, f"{s.timeout_s:.0f}", f"`{s.command()}`"] for s in steps]),
        "",
    ]
    report = out / "gpu_check.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="results/gpu_check",
                        help="folder for gpu_check.md, logs/ and the experiments' outputs (default results/gpu_check)")
    parser.add_argument("--quick", action="store_true",
                        help=f"a shorter check (budget {BUDGET_S[True]:.0f} s instead of {BUDGET_S[False]:.0f} s: "
                             f"bench --quick, shorter experiment runs); without CUDA the same as without --quick")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()  # the steps run in the repository root
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        parser.error(f"--out {args.out}: {error}")
    steps = plan(out, args.quick)

    available, detail, torch = cuda_status()
    if not available:
        report = write_unavailable_report(out, detail, steps, args)
        print(f"gpu_check: CUDA is not available: {detail}. Skipped every CUDA step (nothing to check on this "
              f"machine); report: {report}")
        return 0

    print(f"gpu_check: {detail}, torch {torch.__version__}, CUDA {torch.version.cuda}; budget "
          f"{BUDGET_S[args.quick]:.0f} s; output in {out}", flush=True)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    start = time.perf_counter()
    try:
        run_all(steps, logs, BUDGET_S[args.quick])
    finally:
        report = write_report(out, steps, torch, args, time.perf_counter() - start)
    failed = [s.title for s in steps if not s.passed]
    if failed:
        print(f"gpu_check: FAILED: {', '.join(failed)}; report: {report}")
        return 1
    print(f"gpu_check: every step passed in {time.perf_counter() - start:.0f} s; report: {report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
