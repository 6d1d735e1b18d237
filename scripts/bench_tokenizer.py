"""Benchmark the spike tokenizer on a long sparse Poisson recording (one CPU core).

Generates N neurons firing at `rate` Hz for `duration` seconds as (spike_times, unit_ids) sorted
by time, then tokenizes the current AND past window of every interval on the window grid with
neuroformer_base shapes (window 0.05 s, window_prev 0.05 s, dt 0.01 s, block 100, past block 700).
Throughput counts each input spike once: spikes / seconds of `SpikeTokenizer.encode` (best of
--repeats runs; the median and the cold first run, which pays the OS page faults of fresh memory,
are reported too).

    python scripts/bench_tokenizer.py --neurons 1000 --rate 10 --duration 3600 --json

Target: >= 10 M spikes/s.
"""

from __future__ import annotations

import os

# Pin every thread pool to one core BEFORE numpy/torch are imported.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from neurofound import tokenizers  # noqa: E402


def poisson_recording(n_neurons: int, rate: float, duration: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Independent homogeneous Poisson neurons, as one time-sorted (spike_times, unit_ids) pair.

    The superposition of N Poisson processes of rate r is one Poisson process of rate N r whose
    spikes carry independent uniform neuron labels, which is much cheaper to draw.
    """
    rng = np.random.default_rng(seed)
    n_spikes = rng.poisson(n_neurons * rate * duration)
    times = rng.uniform(0.0, duration, n_spikes)
    times.sort()
    units = rng.integers(0, n_neurons, n_spikes, dtype=np.int32)
    return times, units


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--neurons", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=10.0, help="firing rate per neuron (Hz)")
    parser.add_argument("--duration", type=float, default=3600.0, help="recording length (s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the best is reported")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of text")
    args = parser.parse_args()

    try:  # also pin pools that ignore the environment (if threadpoolctl is installed)
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:
        pass
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    # Truncation of dense windows is expected here; keep the output to the measurement.
    logging.getLogger("neurofound.tokenizers.spike").setLevel(logging.ERROR)

    tok = tokenizers.get("spike")(
        n_neurons=args.neurons, dt=0.01, window=0.05, window_prev=0.05, block_size=100, block_size_prev=700
    )
    times, units = poisson_recording(args.neurons, args.rate, args.duration, args.seed)
    intervals = tok.intervals(args.duration)

    runs = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        out = tok.encode(times, units, intervals)
        runs.append(time.perf_counter() - start)
        del out
    out = tok.encode(times, units, intervals)
    best = min(runs)
    result = {
        "spikes": int(times.size),
        "intervals": int(intervals.size),
        "neurons": args.neurons,
        "rate_hz": args.rate,
        "duration_s": args.duration,
        "seconds_best": round(best, 4),
        "seconds_all": [round(r, 4) for r in runs],
        "spikes_per_s": round(times.size / best),
        "spikes_per_s_median": round(times.size / float(np.median(runs))),
        "spikes_per_s_first_run": round(times.size / runs[0]),  # includes first-touch page faults
        "target_spikes_per_s": 10_000_000,
        "current_shape": list(out["id"].shape),
        "past_shape": list(out["id_prev"].shape),
        "dtypes": {k: str(out[k].dtype) for k in ("id", "dt", "id_prev", "dt_prev")},
        "current_truncated_windows": int(np.count_nonzero(out["n_truncated"])),
        "past_truncated_windows": int(np.count_nonzero(out["n_truncated_prev"])),
        "threads": 1,
        "numpy": np.__version__,
        "cpu": platform.processor() or platform.machine(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>26}: {value}")


if __name__ == "__main__":
    main()
