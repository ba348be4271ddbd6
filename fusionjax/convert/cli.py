"""The command `fusionjax-convert`: an official PyTorch checkpoint -> a params directory.

  fusionjax-convert --input 10000_E.pth --output DIR [--model NAME] [--set FIELD=VALUE ...]

The model and the Config fields its tensors determine are read off the checkpoint
(`fusionjax.convert.infer_config`); `--set` gives the others. DIR receives config.json and
params.safetensors (`fusionjax.convert.save_params`); errors are one line, exit code 2.
"""

import argparse
import pickle
import zipfile
from pathlib import Path
from typing import Any

from fusionjax.convert.torch_file import load_state_dict
from fusionjax.convert.weights import (
  CONFIG_FILE,
  PARAMS_FILE,
  convert,
  detect_model,
  infer_config,
  save_params,
)
from fusionjax.models import registry

PROG = "fusionjax-convert"


class _ArgumentParser(argparse.ArgumentParser):
  """Reports a command-line error in one line, "fusionjax-convert: error: ...", exit code 2."""

  def error(self, message):
    self.exit(2, f"{self.prog}: error: {message}\n")


def _argument_parser() -> argparse.ArgumentParser:
  models = registry.names()
  parser = _ArgumentParser(
    prog=PROG,
    description="Convert an official PyTorch checkpoint (.pth/.pkl/.safetensors) into "
    "fusionjax params (DIR/config.json + DIR/params.safetensors). The model and "
    "its widths and depths are read off the tensor names and shapes.",
  )
  parser.add_argument("--input", required=True, type=Path, metavar="FILE", help="checkpoint file")
  parser.add_argument("--output", required=True, type=Path, metavar="DIR", help="output directory")
  parser.add_argument(
    "--model",
    choices=models,
    metavar="NAME",
    help=f"registered model: {', '.join(models)}; default: the family the "
    "tensor names show (a variant picks the defaults of the fields the "
    "checkpoint does not determine)",
  )
  parser.add_argument(
    "--set",
    action="append",
    default=[],
    dest="fields",
    metavar="FIELD=VALUE",
    help="a Config field the checkpoint does not determine, e.g. "
    "input_fit=pad or scan_impl=chunked (tuples as 2,2,1,2); repeatable",
  )
  parser.add_argument("--overwrite", action="store_true", help="replace params already in DIR")
  return parser


def _parsed_fields(model_name: str, assignments: list[str]) -> dict[str, Any]:
  """{field: value} of --set FIELD=VALUE flags, parsed by the model's Config field types."""
  fields = {}
  for assignment in assignments:
    field, equals, text = assignment.partition("=")
    if not equals:
      raise ValueError(f"--set {assignment}: expected FIELD=VALUE")
    fields[field.strip()] = registry.parse_field(model_name, field.strip(), text)
  return fields


def _run(args) -> str:
  """Converts as `args` say; returns what was written."""
  if args.input.name == PARAMS_FILE and (args.input.parent / CONFIG_FILE).is_file():
    raise ValueError(
      f"{args.input} is fusionjax params already (beside its {CONFIG_FILE}): fuse with "
      f"fusionjax --weights={args.input.parent} (run.py in a checkout), or load it with "
      "fusionjax.convert.load_params"
    )
  state_dict = load_state_dict(args.input)
  model_name = args.model or detect_model(state_dict)
  model_name, config = infer_config(
    state_dict, model_name, **_parsed_fields(model_name, args.fields)
  )
  save_params(
    convert(state_dict, model_name, config),
    args.output,
    model_name,
    config,
    overwrite=args.overwrite,
  )
  return (
    f"wrote {args.output / PARAMS_FILE} and {args.output / CONFIG_FILE}: {model_name}, {config}"
  )


def main(argv=None) -> None:
  """Command line: convert a PyTorch checkpoint into a params directory."""
  parser = _argument_parser()
  args = parser.parse_args(argv)
  try:
    print(_run(args))
  except (OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as error:
    parser.error(str(error))


if __name__ == "__main__":
  main()
