"""Time `neurofound train experiment=quickstart` end to end from a cold data cache, per data seed.

Prints one JSON line per seed with the wall time and the headline metrics of its metrics.json.
The brief's figures are reported on seeds 1 and 2 (seed 0 is the development seed):

    python scripts/bench_quickstart.py --seeds 1 2 --json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KEYS = ["test/id_loss", "test/dt_loss", "test/id_acc", "test/set_f1", "test/set_f1_ref", "test/timing_f1",
        "test/empty_window_frac", "test/psth_corr", "test/psth_corr_truepast", "test/behavior_r", "test/behavior_r2",
        "test/connectivity_auroc", "test/connectivity_auprc", "test/connectivity_auroc_nonhub",
        "test/connectivity_auroc_untrained", "test/connectivity_auroc_corr_baseline",
        "test/connectivity_auroc_lagcorr_baseline", "test/connectivity_auroc_pcorr_baseline",
        "test/connectivity_auroc_corr_baseline_plain", "test/connectivity_auroc_lagcorr_baseline_plain",
        "test/connectivity_auroc_plain", "train/connectivity_auroc", "train/connectivity_auroc_untrained",
        "train/connectivity_auroc_corr_baseline", "train/connectivity_auroc_lagcorr_baseline",
        "train/connectivity_auroc_pcorr_baseline", "train/connectivity_auroc_corr_baseline_plain",
        "train/connectivity_auroc_lagcorr_baseline_plain", "train/steps", "train/fit_seconds"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--warm", action="store_true", help="reuse $NEUROFOUND_CACHE instead of a fresh, empty one")
    ap.add_argument("--out", default=None, help="folder for the run folders (default: a temporary one)")
    ap.add_argument("--json", action="store_true", help="print only the JSON lines")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. trainer.max_steps=100")
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="nf-quickstart-"))
    for seed in args.seeds:
        env = dict(os.environ)
        if not args.warm:
            env["NEUROFOUND_CACHE"] = tempfile.mkdtemp(prefix="nf-cold-cache-")
        run = out / f"seed{seed}"
        cmd = [sys.executable, "-m", "neurofound.cli", "train", "experiment=quickstart", f"data.seed={seed}",
               f"hydra.run.dir={run}", *args.overrides]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr[-4000:])
            raise SystemExit(f"quickstart failed for seed {seed}")
        metrics = json.loads((run / "metrics.json").read_text())
        line = {"bench": "quickstart", "seed": seed, "cold_cache": not args.warm, "wall_seconds": round(wall, 1),
                "threads": os.cpu_count(), **{k: metrics.get(k) for k in KEYS}}
        print(json.dumps(line))
        if not args.json:
            print(f"seed {seed}: {wall:.0f} s end to end; run folder {run}", file=sys.stderr)


if __name__ == "__main__":
    main()
