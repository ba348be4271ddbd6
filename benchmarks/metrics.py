"""Benchmark: fusionjax.metrics against the per-image reference evaluation, on 480x640 triples.

The triples are RoadScene test pairs (docs/data.md), read from the data folder
beside the checkout (``SHARED_DATA``), converted to
grey and resized to 640x480 with Pillow's bilinear filter, fused by the
rounded mean.  Per-triple time is reported for:

* ``fusionjax evaluate_batch``: all 12 CDDFuse metrics, batched call;
* ``fusionjax evaluate_batch, 2 threads``: the same with ``workers=2`` (its
  CPU time adds up both threads; it only gains wall-clock time on idle cores);
* ``fusionjax evaluate``: the same, one ``evaluate`` call per triple;
* ``reference``: the CDDFuse ``utils/Evaluator.py``, one call per metric per
  triple, as its test scripts do.  It runs in a separate interpreter
  (``--reference-python``, which needs numpy, scipy, opencv, scikit-image and
  scikit-learn) loaded from ``--reference-evaluator``; without that flag the
  per-image ``evaluate`` loop is the baseline.

Rounds alternate between the methods so that they share the machine's load;
the median over rounds is reported, as wall-clock time and as CPU time of the
process (steadier than wall-clock time on a shared machine).  The ratios are
relative to the single-threaded ``evaluate_batch``.

Usage:
  python benchmarks/metrics.py [--triples 6] [--rounds 3] \\
      [--reference-evaluator /path/to/MMIF-CDDFuse/utils/Evaluator.py \\
       --reference-python /path/to/venv/bin/python]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import fusionjax.metrics as metrics  # noqa: E402

SHARED_DATA = REPO.parent / "shared" / "data"
WIDTH, HEIGHT = 640, 480

# Runs in the reference interpreter: times the evaluator's 12 calls per triple, prints JSON.
_REFERENCE_DRIVER = r"""
import functools, importlib.util, json, sys, time, warnings
import numpy as np
warnings.filterwarnings("ignore")
spec = importlib.util.spec_from_file_location("reference_evaluator", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
# scikit-image >= 0.20 refuses float input without data_range; 0.19 (CDDFuse's pin) used 2.
module.ssim = functools.partial(module.ssim, data_range=2)
E = module.Evaluator
data = np.load(sys.argv[2])
a, b, f = data["a"], data["b"], data["f"]
wall, cpu, values = [], [], []
for i in range(f.shape[0]):
    A, B, F = a[i], b[i], f[i]
    start, start_cpu = time.perf_counter(), time.process_time()
    row = {"EN": E.EN(F), "SD": E.SD(F), "SF": E.SF(F), "AG": E.AG(F), "MI": E.MI(F, A, B),
           "SCD": E.SCD(F, A, B), "VIF": E.VIFF(F, A, B), "Qabf": E.Qabf(F, A, B),
           "SSIM": E.SSIM(F, A, B),
           "PSNR": E.PSNR(F, A, B), "CC": E.CC(F, A, B), "MSE": E.MSE(F, A, B)}
    wall.append(time.perf_counter() - start)
    cpu.append(time.process_time() - start_cpu)
    values.append({k: float(v) for k, v in row.items()})
print(json.dumps({"wall": wall, "cpu": cpu, "values": values}))
"""


def load_triples(count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(count, 480, 640) float32 stacks a (infrared), b (visible grey), f (rounded mean)."""
  names = sorted(path.stem for path in (SHARED_DATA / "roadscene" / "test" / "ir").glob("*.png"))[
    :count
  ]
  if len(names) < count:
    raise SystemExit(f"only {len(names)} RoadScene test pairs under {SHARED_DATA}")

  def grey(modality: str, name: str) -> np.ndarray:
    with Image.open(SHARED_DATA / "roadscene" / "test" / modality / f"{name}.png") as image:
      levels = metrics.rgb_to_grey(np.asarray(image))
    resized = Image.fromarray(levels).resize((WIDTH, HEIGHT), Image.Resampling.BILINEAR)
    return np.clip(np.round(np.asarray(resized)), 0, 255).astype(np.float32)

  a = np.stack([grey("ir", name) for name in names])
  b = np.stack([grey("vi", name) for name in names])
  return a, b, np.round((a + b) / 2).astype(np.float32)


def time_per_triple(run, count: int) -> tuple[float, float]:
  """(wall, CPU) seconds per triple of ``run()``, which evaluates ``count`` triples."""
  start, start_cpu = time.perf_counter(), time.process_time()
  run()
  return (time.perf_counter() - start) / count, (time.process_time() - start_cpu) / count


def run_reference(python: str, evaluator: Path, triples_file: Path) -> dict:
  completed = subprocess.run(
    [python, "-c", _REFERENCE_DRIVER, str(evaluator), str(triples_file)],
    check=True,
    capture_output=True,
    text=True,
  )
  return json.loads(completed.stdout)


def main() -> None:
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument(
    "--triples", type=int, default=6, help="number of 480x640 triples (default 6)"
  )
  parser.add_argument("--rounds", type=int, default=3, help="alternating timing rounds (default 3)")
  parser.add_argument("--reference-evaluator", type=Path, help="path to CDDFuse utils/Evaluator.py")
  parser.add_argument(
    "--reference-python", default=sys.executable, help="interpreter for the reference"
  )
  args = parser.parse_args()

  a, b, f = load_triples(args.triples)
  metrics.evaluate(a[0], b[0], f[0])  # warm-up: imports, allocator

  count = f.shape[0]
  methods = {
    "fusionjax evaluate_batch": lambda: metrics.evaluate_batch(a, b, f),
    "fusionjax evaluate_batch, 2 threads": lambda: metrics.evaluate_batch(a, b, f, workers=2),
    "fusionjax evaluate (per image)": lambda: [
      metrics.evaluate(a[i], b[i], f[i]) for i in range(count)
    ],
  }
  timings: dict[str, list[tuple[float, float]]] = {name: [] for name in methods}
  reference_values = None
  with tempfile.TemporaryDirectory() as scratch:
    triples_file = Path(scratch) / "triples.npz"
    if args.reference_evaluator:
      np.savez(triples_file, a=a, b=b, f=f)
      timings["reference Evaluator.py (per image)"] = []
    for _ in range(args.rounds):
      for name, run in methods.items():
        timings[name].append(time_per_triple(run, count))
      if args.reference_evaluator:
        result = run_reference(args.reference_python, args.reference_evaluator, triples_file)
        timings["reference Evaluator.py (per image)"].append(
          (statistics.fmean(result["wall"]), statistics.fmean(result["cpu"]))
        )
        reference_values = result["values"]

  medians = {
    name: (statistics.median(w for w, _ in values), statistics.median(c for _, c in values))
    for name, values in timings.items()
  }
  ours_wall, ours_cpu = medians["fusionjax evaluate_batch"]
  baseline = list(medians)[-1]
  print(
    f"{count} triples of {HEIGHT}x{WIDTH}, 12 metrics (EN ... MSE), "
    f"median of {args.rounds} rounds\n"
  )
  print(
    f"{'method':<38} {'wall s/triple':>14} {'CPU s/triple':>13} "
    f"{'wall ratio':>11} {'CPU ratio':>10}"
  )
  for name, (wall, cpu) in medians.items():
    print(
      f"{name:<38} {wall:>14.4f} {cpu:>13.4f} {wall / ours_wall:>11.1f} {cpu / ours_cpu:>10.1f}"
    )
  baseline_wall, baseline_cpu = medians[baseline]
  print()
  if not args.reference_evaluator:
    print("no --reference-evaluator given: the baseline is this library's own per-image path")
  for name in methods:
    if name == baseline:
      continue
    wall, cpu = medians[name]
    print(
      f"speed-up of {name} over {baseline}: "
      f"{baseline_wall / wall:.1f}x wall-clock, {baseline_cpu / cpu:.1f}x CPU time"
    )

  if reference_values is not None:
    ours_values = metrics.evaluate_batch(a, b, f)
    worst = {
      name: max(
        abs(ours_values[name][i] - row[name]) / abs(row[name])
        for i, row in enumerate(reference_values)
      )
      for name in metrics.DEFAULT_METRICS
    }
    print(
      "max relative difference to the reference: "
      + ", ".join(f"{k} {v:.1e}" for k, v in worst.items())
    )


if __name__ == "__main__":
  main()
