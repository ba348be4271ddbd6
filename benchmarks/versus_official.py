"""fusionjax against the official PyTorch code: forward time of the same network on the same pair.

For each model and size, the official network (its repository's own model class, run by PyTorch
on the CPU) and fusionjax's port compute the same raw forward pass, the official `model(A, B)`
(no test-time padding, cropping or clamping), with the same weights on the same random pair.
Two persistent processes take turns: this one runs fusionjax (jax.jit, compiled and run once
before timing each size), a worker started with --torch-python runs the official model (one
untimed warm-up forward at 16 x 16, rounded up as below); per size the timed forwards
alternate, fusionjax then official, --repeats times each. Prints a markdown table: the median
seconds of each side, their ratio, and the largest difference between the two outputs (with the
output's scale), which shows that both sides compute the same thing (float32 round-off: about
1e-6 of the output's scale). Progress goes to stderr.

  python benchmarks/versus_official.py --torch-python /tmp/torchvenv/bin/python \\
      --mambadfuse-src official/MambaDFuse --s4fusion-src official/S4Fusion \\
      --mamba-ssm-src official/mamba-ssm --models mambadfuse,s4fusion --sizes 64x64,128x128

Weights: the worker builds the official model with its own initialisation under
torch.manual_seed(--seed) and saves its state_dict with torch.save; fusionjax reads it without
torch (`fusionjax.convert.load_state_dict`) and maps it with `fusionjax.convert.convert`, as
`fusionjax-convert` does a released checkpoint. Inputs: two (1, 1, H, W) planes of
numpy.random.default_rng(--seed).uniform, float32, fed to both sides.

Sizes are network inputs. MambaDFuse takes any H x W (its test script mirror-pads a 256 x 256
image to 264 x 264); S4Fusion's network needs 12k + 1 and FusionMamba's multiples of 32: a size
is rounded up to the next one the network takes, and the table shows the size that ran.

Threads: both processes are pinned (sched_setaffinity) to the first --threads CPUs this process
may use, before jax or torch start their thread pools, and the worker calls
torch.set_num_threads(--threads). The affinity is what bounds XLA's CPU thread pools (they are
sized from the CPUs a process may run on); the two sides never run at the same time.

Prerequisites (nothing official is part of this repository; docs/parity.md names the sources):
  1. A Python with PyTorch (the CPU build is enough), numpy, einops, pillow, and timm without its
     dependencies (timm's torchvision import is answered by a placeholder, see below):
       python3.11 -m venv torchvenv
       torchvenv/bin/pip install torch numpy einops pillow
       torchvenv/bin/pip install --no-deps timm
     (`pip install torch --index-url https://download.pytorch.org/whl/cpu` avoids the CUDA wheels.)
  2. The official repositories, at the commits of docs/parity.md (their checkpoints are not needed;
     FusionMamba only for --models fusionmamba):
       git clone https://github.com/Lizhe1228/MambaDFuse
       git -C MambaDFuse checkout 0c2a117e72c386af5403991753a25fbfd7fcdcbb
       git clone https://github.com/zipper112/S4Fusion
       git -C S4Fusion checkout 0d900f06ced076ccd2e0b16bbcb4539f89cf5dfa
       git clone https://github.com/millieXie/FusionMamba
       git -C FusionMamba checkout 3ee1e7a8ec458f7e27695ed3f1cdc63c6bd8168c
  3. The mamba-ssm source distributions the repositories pin, unpacked into one folder (FusionMamba
     vendors its own mamba_ssm). pip prepares an sdist's metadata by running its setup.py, which
     needs torch, wheel and packaging, and MAMBA_SKIP_CUDA_BUILD=TRUE to skip the CUDA check:
       torchvenv/bin/pip install wheel packaging
       MAMBA_SKIP_CUDA_BUILD=TRUE torchvenv/bin/pip download --no-deps --no-binary :all: \\
           --no-build-isolation mamba-ssm==1.0.1 mamba-ssm==1.2.0 -d sdists
       mkdir mamba-ssm && for f in sdists/*.tar.gz; do tar -xzf "$f" -C mamba-ssm; done
     giving mamba-ssm/mamba_ssm-1.0.1 (MambaDFuse) and mamba-ssm/mamba_ssm-1.2.0 (S4Fusion).

What the worker changes to run the official code without CUDA (at import and run time; no
official file is edited or copied, docs/parity.md sections 1 and 8 describe the same setup):
  - torchvision, matplotlib and mpl_toolkits, when not installed, import as placeholders whose
    objects raise if used (timm imports torchvision; the repositories import matplotlib; none is
    used by the networks).
  - mamba_ssm: empty package objects over the sdist's (FusionMamba: the vendored) folders, so that
    its __init__ (language-model code) does not run; `mamba_ssm.ops.triton` fails to import, which
    the official try/excepts turn into None (not used at inference). The compiled extensions
    selective_scan_cuda and causal_conv1d_cuda are placeholders.
  - causal_conv1d: a module whose causal_conv1d_fn is the reference computation (depthwise
    conv1d with width - 1 zeros on the left, cut to the input length, then SiLU).
  - In mamba_ssm.ops.selective_scan_interface: selective_scan_fn := selective_scan_ref and
    mamba_inner_fn := mamba_inner_ref (both the sdist's own PyTorch references).
  - MambaDFuse: its repository's mamba_simple.py (the M3 block; its README says to copy it over
    the installed one) is loaded as mamba_ssm.modules.mamba_simple. It imports two functions of
    the Vision-Mamba fork of mamba_ssm that 1.0.1 lacks: mamba_inner_fn_no_out_proj is
    mamba_inner_ref with an identity out-projection (returning (batch, d_inner, L), as the fork's
    kernel), bimamba_inner_fn raises (unused). The Mamba modules keep use_fast_path=True as the
    authors ran them (their slow path ignores the M3 block's extra inputs).
  - FusionMamba: models/cross.py calls selective_scan_cuda.fwd directly; the placeholder's fwd
    returns [selective_scan_ref(...), None] (the scan states are only kept for backward).
    `mamba_ssm.Mamba` is set from the vendored modules/mamba_simple.py, and Tensor.cuda is the
    identity while the model is built (its LDC masks call .cuda()).

The official forward loops over tokens in Python (selective_scan_ref); MambaDFuse scans every
pixel ~40 times, so a 264 x 264 forward takes minutes on one core. Compare rows of one run only:
machines are shared and noisy.
"""

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np


@dataclasses.dataclass(frozen=True)
class Official:
  """Where a model's official code lives and how its network is built.

  Attributes:
    repo, commit: its GitHub repository and the commit docs/parity.md was checked against.
    mamba_ssm: the mamba-ssm sdist version it pins; None: it vendors mamba_ssm.
    marker: a file a checkout of `repo` must hold.
  """

  repo: str
  commit: str
  mamba_ssm: str | None
  marker: str


OFFICIAL = {
  "mambadfuse": Official(
    repo="Lizhe1228/MambaDFuse",
    commit="0c2a117e72c386af5403991753a25fbfd7fcdcbb",
    mamba_ssm="1.0.1",
    marker="models/network.py",
  ),
  "s4fusion": Official(
    repo="zipper112/S4Fusion",
    commit="0d900f06ced076ccd2e0b16bbcb4539f89cf5dfa",
    mamba_ssm="1.2.0",
    marker="S4Fusion.py",
  ),
  "fusionmamba": Official(
    repo="millieXie/FusionMamba",
    commit="3ee1e7a8ec458f7e27695ed3f1cdc63c6bd8168c",
    mamba_ssm=None,
    marker="models/vmamba_Fusion_efficross.py",
  ),
}
# The network input side (rounded up to one the network takes) of the official side's warm-up.
WARMUP_SIZE = 16

# Modules the official code imports but its networks never use: placeholders when not installed.
PLACEHOLDER_PACKAGES = ("torchvision", "matplotlib", "mpl_toolkits")


# ----------------------------------------------------------------------------------------------
# The official side: a worker run by --torch-python (imports torch, never jax or fusionjax).


def _placeholder_modules():
  """Installs a last-resort import finder that makes PLACEHOLDER_PACKAGES (and their submodules)
  import as modules whose every attribute is a class that raises when instantiated or called."""
  import importlib.abc
  import importlib.machinery
  import types

  class Unusable(type):
    """A placeholder's attribute: a class (to subclass or test against) with attributes of its
    own kind, that raises when instantiated."""

    def __getattr__(cls, name):
      if name.startswith("__"):
        raise AttributeError(name)
      return unusable(f"{cls.__qualname__}.{name}")

    def __call__(cls, *args, **kwargs):
      raise RuntimeError(f"{cls.__qualname__} is a placeholder (not installed) and cannot be used")

  def unusable(qualname):
    return Unusable(qualname.rpartition(".")[2], (), {"__qualname__": qualname})

  class Placeholder(types.ModuleType):
    def __getattr__(self, name):
      if name.startswith("__"):
        raise AttributeError(name)
      return unusable(f"{self.__name__}.{name}")

  class Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
      if fullname.partition(".")[0] not in PLACEHOLDER_PACKAGES:
        return None
      return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec):
      module = Placeholder(spec.name)
      module.__path__ = []
      return module

    def exec_module(self, module):
      pass

  sys.meta_path.append(Finder())


def _causal_conv1d_module():
  """A `causal_conv1d` module: causal_conv1d_fn is the reference computation of causal-conv1d."""
  import types

  import torch.nn.functional as F

  def causal_conv1d_fn(x, weight, bias=None, activation=None):
    """(batch, dim, L) through a depthwise conv of width w with w - 1 zeros on the left."""
    width = weight.shape[-1]
    out = F.conv1d(x, weight.unsqueeze(1), bias, padding=width - 1, groups=x.shape[1])
    out = out[..., : x.shape[-1]]
    return out if activation is None else F.silu(out)

  def causal_conv1d_update(*args, **kwargs):
    raise RuntimeError("causal_conv1d_update (step-by-step decoding) is not provided")

  module = types.ModuleType("causal_conv1d")
  module.causal_conv1d_fn = causal_conv1d_fn
  module.causal_conv1d_update = causal_conv1d_update
  return module


def _mamba_ssm_packages(folder: Path, selective_scan_fwd=None):
  """Imports mamba_ssm's selective_scan_interface from `folder` (the folder holding the package
  `mamba_ssm`) without running mamba_ssm's __init__, with the CPU patches; returns it."""
  import importlib
  import types

  def placeholder(name, **functions):
    module = types.ModuleType(name)
    module.__dict__.update(functions)
    sys.modules[name] = module
    return module

  placeholder("selective_scan_cuda", **({"fwd": selective_scan_fwd} if selective_scan_fwd else {}))
  placeholder("causal_conv1d_cuda")
  sys.modules["causal_conv1d"] = _causal_conv1d_module()
  root = placeholder("mamba_ssm", __path__=[str(folder / "mamba_ssm")])
  for sub in ("ops", "modules"):
    setattr(root, sub, placeholder(f"mamba_ssm.{sub}", __path__=[str(folder / "mamba_ssm" / sub)]))
  sys.modules["mamba_ssm.ops.triton"] = None  # ImportError, as without triton
  interface = importlib.import_module("mamba_ssm.ops.selective_scan_interface")
  interface.selective_scan_fn = interface.selective_scan_ref
  interface.mamba_inner_fn = interface.mamba_inner_ref
  return interface


def _build_mambadfuse(src: Path, mamba_ssm_src: Path):
  import importlib.util

  import torch

  interface = _mamba_ssm_packages(mamba_ssm_src)

  def mamba_inner_fn_no_out_proj(xz, conv1d_w, conv1d_b, x_proj_w, delta_w, *rest, **options):
    """Vision-Mamba's fused function (mamba_inner_fn's arguments without the out_proj ones):
    mamba_inner_ref with an identity out_proj (exact), as (batch, d_inner, L)."""
    identity = torch.eye(xz.shape[1] // 2, dtype=xz.dtype)
    out = interface.mamba_inner_ref(
      xz, conv1d_w, conv1d_b, x_proj_w, delta_w, identity, None, *rest, **options
    )
    return out.transpose(1, 2)

  def bimamba_inner_fn(*args, **kwargs):
    raise RuntimeError("bimamba_inner_fn is not provided (MambaDFuse does not call it)")

  interface.mamba_inner_fn_no_out_proj = mamba_inner_fn_no_out_proj
  interface.bimamba_inner_fn = bimamba_inner_fn
  spec = importlib.util.spec_from_file_location(
    "mamba_ssm.modules.mamba_simple", src / "mamba_simple.py"
  )
  mamba_simple = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = mamba_simple
  spec.loader.exec_module(mamba_simple)
  if mamba_simple.mamba_inner_fn_no_out_proj is not mamba_inner_fn_no_out_proj:
    raise RuntimeError("the repository's mamba_simple.py did not take the CPU functions")
  from models.network import MambaDFuse

  # test_MambaDFuse.define_model.
  return MambaDFuse(
    upscale=1,
    in_chans=1,
    img_size=128,
    window_size=8,
    img_range=1.0,
    depths=[6, 6, 6, 6],
    embed_dim=60,
    num_heads=[6, 6, 6, 6],
    mlp_ratio=2,
    upsampler=None,
    resi_connection="1conv",
  )


def _build_s4fusion(src: Path, mamba_ssm_src: Path):
  interface = _mamba_ssm_packages(mamba_ssm_src)
  import modules.block
  import modules.fusion
  from S4Fusion import MambaNet

  for module in (modules.block, modules.fusion):
    if module.selective_scan_fn is not interface.selective_scan_ref:
      raise RuntimeError(f"{module.__name__} did not take selective_scan_ref")
  return MambaNet()  # test.py


def _build_fusionmamba(src: Path, mamba_ssm_src: Path | None):
  del mamba_ssm_src  # vendored in the repository
  import importlib

  import torch

  def fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    """selective_scan_cuda.fwd without z: [out, scan states]; the states only serve backward."""
    if z is not None:
      raise RuntimeError("selective_scan_cuda.fwd with z is not provided")
    out = interface.selective_scan_ref(u, delta, A, B, C, D, None, delta_bias, delta_softplus)
    return [out, None]

  interface = _mamba_ssm_packages(src, fwd)
  sys.modules["mamba_ssm"].Mamba = importlib.import_module("mamba_ssm.modules.mamba_simple").Mamba
  from models.vmamba_Fusion_efficross import VSSM_Fusion

  cuda = torch.Tensor.cuda
  torch.Tensor.cuda = lambda self, *args, **kwargs: self
  try:
    return VSSM_Fusion(in_channel=1)  # test.py
  finally:
    torch.Tensor.cuda = cuda


BUILDERS = {
  "mambadfuse": _build_mambadfuse,
  "s4fusion": _build_s4fusion,
  "fusionmamba": _build_fusionmamba,
}


def torch_worker(config: dict) -> None:
  """The official side: builds `config["model"]`, saves its state_dict, then answers one JSON
  request per stdin line on the original stdout (everything else printed goes to stderr)."""
  os.sched_setaffinity(0, config["cpus"])
  replies = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
  os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
  reply = lambda **fields: replies.write(json.dumps(fields) + "\n")
  try:
    import warnings

    import torch

    # mamba_ssm's torch.cuda.amp decorators are deprecated in recent torch.
    warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.cuda.amp")
    # The repositories import timm.models.layers, deprecated in timm 1.0.
    warnings.filterwarnings("ignore", category=FutureWarning, message="Importing from timm")
    torch.set_num_threads(config["threads"])
    src = Path(config["src"]).resolve()
    script_dir = Path(__file__).resolve().parent
    sys.path[:] = [str(src)] + [p for p in sys.path if Path(p or ".").resolve() != script_dir]
    _placeholder_modules()
    torch.manual_seed(config["seed"])
    mamba_ssm_src = config["mamba_ssm_src"] and Path(config["mamba_ssm_src"]).resolve()
    model = BUILDERS[config["model"]](src, mamba_ssm_src).eval()
    torch.save(model.state_dict(), config["state_dict"])
    reply(ready=True)
    inputs = None
    for line in iter(sys.stdin.readline, ""):
      request = json.loads(line)
      if "warmup" in request:
        with torch.no_grad():
          model(*torch.rand(2, 1, 1, *request["warmup"]))
        reply(ok=True)
      elif "inputs" in request:
        inputs = [torch.from_numpy(np.load(path)) for path in request["inputs"]]
        reply(ok=True)
      elif "forward" in request:
        with torch.no_grad():
          start = time.perf_counter()
          out = model(*inputs)
          seconds = time.perf_counter() - start
        if request["forward"]:
          np.save(request["forward"], out.numpy())
        reply(seconds=seconds)
  except Exception as error:  # reported to the benchmark, which stops with it
    traceback.print_exc()
    reply(error=f"{type(error).__name__}: {error}")
    sys.exit(1)


# ----------------------------------------------------------------------------------------------
# The benchmark: fusionjax in this process, the official model in a worker.


class Worker:
  """The official side of one model: its worker process and its requests."""

  def __init__(self, args, model: str, temp: Path, cpus: list[int]):
    self.model = model
    self.state_dict = temp / f"{model}_official_state_dict.pth"
    config = {
      "model": model,
      "src": str(getattr(args, f"{model}_src")),
      "mamba_ssm_src": (
        None
        if OFFICIAL[model].mamba_ssm is None
        else str(args.mamba_ssm_src / f"mamba_ssm-{OFFICIAL[model].mamba_ssm}")
      ),
      "cpus": cpus,
      "threads": args.threads,
      "seed": args.seed,
      "state_dict": str(self.state_dict),
    }
    self.process = subprocess.Popen(
      [args.torch_python, str(Path(__file__).resolve()), "--torch-worker", json.dumps(config)],
      stdin=subprocess.PIPE,
      stdout=subprocess.PIPE,
      text=True,
      bufsize=1,
    )
    self._reply()

  def _reply(self) -> dict:
    line = self.process.stdout.readline()
    if not line:
      raise SystemExit(
        f"the official {self.model} worker exited with status {self.process.wait()} "
        "(its output is above)"
      )
    reply = json.loads(line)
    if "error" in reply:
      raise SystemExit(f"the official {self.model} worker failed: {reply['error']}")
    return reply

  def request(self, **fields) -> dict:
    self.process.stdin.write(json.dumps(fields) + "\n")
    return self._reply()

  def close(self) -> None:
    self.process.stdin.close()
    self.process.wait()


def network_size(model: str, config, size: int) -> int:
  """The smallest network input side >= size that the fusionjax network `model` takes."""
  if model == "s4fusion":
    from fusionjax.models import s4fusion

    return s4fusion.padded_size(size, len(config.dims))
  if model == "fusionmamba":
    return -(-size // config.size_multiple) * config.size_multiple
  return size


def compare(args, model: str, temp: Path, cpus: list[int]):
  """Yields a table row per size for `model`."""
  import jax
  import jax.numpy as jnp

  from fusionjax import convert

  print(f"{model}: building the official model", file=sys.stderr, flush=True)
  worker = Worker(args, model, temp, cpus)
  try:
    params = convert.convert(convert.load_state_dict(worker.state_dict), model)
    config = params.module().config
    worker.request(warmup=[network_size(model, config, WARMUP_SIZE)] * 2)
    forward = jax.jit(lambda params, a, b: params.module().network(a, b))
    for height, width in args.sizes:
      height, width = (network_size(model, config, size) for size in (height, width))
      rng = np.random.default_rng(args.seed)
      pair = [rng.uniform(size=(1, 1, height, width)).astype(np.float32) for _ in range(2)]
      paths = [str(temp / f"{name}.npy") for name in "ab"]
      for path, plane in zip(paths, pair):
        np.save(path, plane)
      worker.request(inputs=paths)
      a, b = (jnp.asarray(plane.transpose(0, 2, 3, 1)) for plane in pair)
      print(f"{model} {height}x{width}: compiling", file=sys.stderr, flush=True)
      compiled = forward.lower(params, a, b).compile()
      jax.block_until_ready(compiled(params, a, b))
      ours, theirs = [], []
      official_path = temp / "official_out.npy"
      for run in range(args.repeats):
        start = time.perf_counter()
        fused = jax.block_until_ready(compiled(params, a, b))
        ours.append(time.perf_counter() - start)
        theirs.append(worker.request(forward=str(official_path) if run == 0 else "")["seconds"])
        if run == 0:
          official = np.load(official_path).reshape(height, width)
          difference = float(np.abs(np.asarray(fused).reshape(height, width) - official).max())
          scale = float(np.abs(official).max())
        print(
          f"{model} {height}x{width}: run {run + 1}/{args.repeats}: fusionjax {ours[-1]:.3f} s, "
          f"official {theirs[-1]:.3f} s",
          file=sys.stderr,
          flush=True,
        )
      ours, theirs = statistics.median(ours), statistics.median(theirs)
      yield (
        f"| {model} | {height}x{width} | {ours:.3f} | {theirs:.3f} | {theirs / ours:.1f} | "
        f"{difference:.1e} | {scale:.2f} |"
      )
  finally:
    worker.close()


def _size(text: str) -> tuple[int, int]:
  height, sep, width = text.strip().lower().partition("x")
  if not (sep and height.isdigit() and width.isdigit() and int(height) > 0 and int(width) > 0):
    raise argparse.ArgumentTypeError(f"{text!r} is not HEIGHTxWIDTH (e.g. 264x264)")
  return int(height), int(width)


def _positive(text: str) -> int:
  if not text.isdigit() or int(text) < 1:
    raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
  return int(text)


def parse_args():
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument(
    "--torch-python",
    type=Path,
    help="a Python interpreter with torch, numpy, einops, pillow and timm",
  )
  for model, official in OFFICIAL.items():
    parser.add_argument(
      f"--{model}-src",
      type=Path,
      help=f"a checkout of github.com/{official.repo} (commit {official.commit[:7]})",
    )
  parser.add_argument(
    "--mamba-ssm-src",
    type=Path,
    help="the folder holding the unpacked mamba-ssm sdists mamba_ssm-1.0.1 (MambaDFuse) and "
    "mamba_ssm-1.2.0 (S4Fusion)",
  )
  parser.add_argument(
    "--models",
    default="mambadfuse,s4fusion",
    help=f"comma list of {', '.join(OFFICIAL)} (default: %(default)s)",
  )
  parser.add_argument(
    "--sizes",
    type=lambda text: [_size(size) for size in text.split(",")],
    default=[(64, 64)],
    help="comma list of network input sizes HxW (default: 64x64)",
  )
  parser.add_argument(
    "--threads", type=_positive, default=1, help="CPU cores for each side (default: 1)"
  )
  parser.add_argument(
    "--repeats", type=_positive, default=3, help="timed forwards per side (default: 3)"
  )
  parser.add_argument("--seed", type=int, default=0, help="torch and numpy seed (default: 0)")
  parser.add_argument("--torch-worker", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.torch_worker is not None:
    return args

  args.models = [name.strip() for name in args.models.split(",") if name.strip()]
  unknown = sorted(set(args.models) - set(OFFICIAL))
  if unknown or not args.models:
    parser.error(f"--models: unknown {unknown}; choose from {', '.join(OFFICIAL)}")
  if args.torch_python is None:
    parser.error("--torch-python is required")
  for model in args.models:
    official, src = OFFICIAL[model], getattr(args, f"{model}_src")
    if src is None:
      parser.error(f"--{model}-src is required for {model} (a checkout of {official.repo})")
    if not (src / official.marker).is_file():
      parser.error(f"--{model}-src {src}: no {official.marker} (not a checkout of {official.repo})")
    if official.mamba_ssm is not None:
      sdist = f"mamba_ssm-{official.mamba_ssm}"
      if args.mamba_ssm_src is None:
        parser.error(f"--mamba-ssm-src is required for {model} (a folder holding {sdist}/)")
      if not (args.mamba_ssm_src / sdist / "mamba_ssm/ops/selective_scan_interface.py").is_file():
        parser.error(f"--mamba-ssm-src {args.mamba_ssm_src}: no unpacked {sdist}/ sdist in it")
  return args


def torch_version(python: Path) -> str:
  """The torch version of `python`; exits with one line unless it runs and finds the worker's
  packages."""
  if not (python.is_file() and os.access(python, os.X_OK)):
    raise SystemExit(f"--torch-python {python}: no such executable")
  probe = (
    "import importlib.util\n"
    "packages = ('torch', 'numpy', 'einops', 'timm', 'PIL')\n"
    "missing = [name for name in packages if not importlib.util.find_spec(name)]\n"
    "if missing: raise SystemExit('cannot import ' + ', '.join(missing))\n"
    "import torch\n"
    "print(torch.__version__)"
  )
  try:
    result = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=120)
  except (OSError, subprocess.TimeoutExpired) as error:
    raise SystemExit(f"--torch-python {python}: cannot run it ({error})") from None
  if result.returncode:
    last_line = (result.stderr.strip().splitlines() or ["failed"])[-1]
    raise SystemExit(f"--torch-python {python}: {last_line}")
  return result.stdout.strip()


def main():
  args = parse_args()
  if args.torch_worker is not None:
    torch_worker(json.loads(args.torch_worker))
    return
  official_torch = torch_version(args.torch_python)
  available = sorted(os.sched_getaffinity(0))
  if args.threads > len(available):
    raise SystemExit(f"--threads {args.threads}: this process may use {len(available)} CPUs")
  cpus = available[: args.threads]
  os.sched_setaffinity(0, cpus)  # before jax starts its thread pools
  import jax

  print(
    f"fusionjax: jax {jax.__version__} ({jax.default_backend()}); official: torch "
    f"{official_torch} (CPU); {args.threads} thread(s) each, on CPUs {cpus}; median of "
    f"{args.repeats} forwards"
  )
  header = (
    "| model | network input | fusionjax s | official s | official / fusionjax | "
    "max abs difference | max abs output |"
  )
  print(header)
  print("|" + "---|" * (header.count("|") - 1), flush=True)
  with tempfile.TemporaryDirectory(prefix="versus_official_") as temp:
    for model in args.models:
      for row in compare(args, model, Path(temp), cpus):
        print(row, flush=True)


if __name__ == "__main__":
  main()
