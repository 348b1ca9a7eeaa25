"""The README's measured figures, remeasured on this machine from a fresh clone of this checkout:

python scripts/readme_figures.py demo [--runs 2]   # the demo's wall time and mAP@0.5 (README, first screen)
python scripts/readme_figures.py tests            # the test suite's time, all of it and the quick subset

Each run starts from `git clone` of the committed checkout in a temporary folder (no data/, weights/ or runs/ of
this one), as a reader's first run would, and prints the machine it ran on. The BCCD / raccoon head tables come from
bench_heads.py, the export table from `main.py bench --export`, the pipeline figures from `main.py bench`.
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def machine():
    model = platform.processor() or "unknown CPU"
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model}, {cores} cores usable, Python {platform.python_version()}, {platform.system()}"


def fresh_clone(folder):
    """A clone of the committed checkout, with ../shared beside it when this checkout has one (the tests use it)."""
    clone = os.path.join(folder, "p")
    subprocess.run(["git", "clone", "-q", ROOT, clone], check=True)
    shared = os.path.join(os.path.dirname(ROOT), "shared")
    if os.path.isdir(shared):
        os.symlink(shared, os.path.join(folder, "shared"))
    return clone


def timed(command, cwd, log):
    start = time.perf_counter()
    with open(log, "w") as f:
        code = subprocess.run(command, cwd=cwd, stdout=f, stderr=subprocess.STDOUT).returncode
    return time.perf_counter() - start, code


def minutes(seconds):
    return f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def measure_demo(runs, keep=None):
    rows = []
    for k in range(runs):
        with tempfile.TemporaryDirectory() as folder:
            clone = fresh_clone(folder)
            seconds, code = timed([sys.executable, "main.py", "--config", "configs/demo.json"], clone,
                                  os.path.join(folder, "demo.log"))  # fmt: skip
            if code:
                sys.exit(
                    f"run {k + 1}: the demo exited with {code}; its log: {open(os.path.join(folder, 'demo.log')).read()[-2000:]}"
                )
            with open(os.path.join(clone, "runs", "demo", "results.json")) as f:
                results = json.load(f)
            rows.append((seconds, results["map"], results.get("best_epoch")))
            if k == 0:  # what a new user sees first
                with open(os.path.join(folder, "demo.log")) as f:
                    print("first 30 lines of run 1's output:\n" + "".join(f.readlines()[:30]), end="")
                if keep:
                    shutil.copytree(os.path.join(clone, "runs", "demo"), keep, dirs_exist_ok=True)
                    shutil.copy(os.path.join(folder, "demo.log"), os.path.join(keep, "demo.log"))
            print(
                f"run {k + 1}: {minutes(seconds)}, mAP@0.5 {results['map']:.4f} (best epoch {results.get('best_epoch')})"
            )
    times, maps = [r[0] for r in rows], [r[1] for r in rows]
    print(f"demo over {runs} run(s): {minutes(min(times))} - {minutes(max(times))}, mAP@0.5 {min(maps):.4f} - "
          f"{max(maps):.4f}")  # fmt: skip


def measure_tests():
    with tempfile.TemporaryDirectory() as folder:
        clone = fresh_clone(folder)
        for name, extra in (("quick subset (-m 'not slow')", ["-m", "not slow"]), ("whole suite", [])):
            seconds, code = timed([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=25",
                                   *extra], clone, os.path.join(folder, "tests.log"))  # fmt: skip
            lines = open(os.path.join(folder, "tests.log")).read().strip().splitlines()
            print(f"{name}: {minutes(seconds)} ({lines[-1]}){'' if code == 0 else f', exit {code}'}")
            slowest = [line for line in lines if line.split("s ", 1)[0].replace(".", "").isdigit()]
            print("  the 25 slowest:\n" + "\n".join("  " + line for line in slowest[:25]))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["demo", "tests"])
    p.add_argument("--runs", type=int, default=2, help="demo: how many fresh-clone runs (default 2)")
    p.add_argument("--keep", help="demo: copy run 1's run folder and output here")
    args = p.parse_args()
    print(f"Machine: {machine()}")
    if args.what == "demo":
        measure_demo(args.runs, args.keep)
    else:
        measure_tests()


if __name__ == "__main__":
    main()
