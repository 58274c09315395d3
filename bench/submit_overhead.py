#!/usr/bin/env python3
"""condor_submit_cloud against plain condor_submit: a 1,000-proc submit into a real schedd.

Runs both, interleaved, REPS times each, in one process on one personal pool, and
prints the median times and their ratio (ratios from one run: these machines are noisy).

    make bench            # or: dev/sandbox run -- python3 bench/submit_overhead.py [--procs N]

The wrapper is run through the launcher the RPM installs (#!/usr/bin/python3 -s).
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from condor_plugins.localpool import PersonalPool  # noqa: E402

SUBMIT = """\
executable = /bin/true
request_memory = 64
requirements = (TARGET.Memory > 32) || (TARGET.Arch == "X86_64")
queue {procs}
"""


def timed(pool, cmd):
    t0 = time.perf_counter()
    res = pool.run(*cmd, check=False, timeout=300)
    dt = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed: {res.stderr.strip()}")
    return dt


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--procs", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="cp-bench-", dir="/tmp"))
    pool = PersonalPool(base / "pool", name="bench", extra_config=(
        "MAX_JOBS_SUBMITTED = 1000000\nMAX_JOBS_PER_OWNER = 1000000\nMAX_JOBS_PER_SUBMISSION = 1000000\n"))
    pool.start()
    try:
        sub = base / "job.sub"
        sub.write_text(SUBMIT.format(procs=args.procs))
        plain_cmd = ["condor_submit", str(sub)]
        # The launcher the RPM installs (#!/usr/bin/python3 -s, packaging/rpm/pyinstall.py).
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "packaging" / "rpm"))
        import pyinstall
        launcher = base / "bin" / "condor_submit_cloud"
        pyinstall.write_launcher("condor_submit_cloud", launcher)
        wrap_cmd = [str(launcher), "--mode", "cloud", str(sub)]
        env_path = {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        plain, wrapped = [], []
        timed(pool, plain_cmd)  # warm-up
        for _ in range(args.reps):
            plain.append(timed(pool, plain_cmd))
            t0 = time.perf_counter()
            res = pool.run(*wrap_cmd, check=False, timeout=300, env=env_path)
            wrapped.append(time.perf_counter() - t0)
            if res.returncode != 0:
                raise SystemExit(f"wrapper failed: {res.stderr.strip()}")
            pool.run("condor_rm", "-all", check=False)
        p, w = statistics.median(plain), statistics.median(wrapped)
        result = {"procs": args.procs, "reps": args.reps, "plain_median_s": round(p, 3),
                  "wrapper_median_s": round(w, 3), "ratio": round(w / p, 3),
                  "plain_all": [round(x, 3) for x in plain], "wrapper_all": [round(x, 3) for x in wrapped]}
        if args.json:
            print(json.dumps(result))
        else:
            print(f"{args.procs}-proc submit, median of {args.reps}: condor_submit {p:.3f}s, "
                  f"condor_submit_cloud {w:.3f}s, ratio {w / p:.3f}x (goal <= 1.10x); "
                  f"constant overhead per call {1000 * (w - p):.0f} ms")
    finally:
        pool.stop()
        subprocess.run(["rm", "-rf", str(base)])


if __name__ == "__main__":
    main()
