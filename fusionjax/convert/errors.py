"""The error a state_dict that does not fit its model raises, and the short name lists in it."""

from collections.abc import Collection

NAMES_SHOWN = 5  # how many names an error message lists of each kind


class ConversionError(ValueError):
  """A state_dict that does not match the model; the message names every offending tensor."""


def name_list(names: Collection) -> str:
  """The first `NAMES_SHOWN` of `names`, joined, and how many more there are: error messages
  about a whole checkpoint stay a few lines long."""
  names = [str(name) for name in names]
  shown = ", ".join(names[:NAMES_SHOWN])
  return shown + (f", ... (+{len(names) - NAMES_SHOWN} more)" if len(names) > NAMES_SHOWN else "")


def counted(title: str, names: Collection) -> str:
  """ "<count> <title>: <first names>"."""
  return f"{len(names)} {title}: {name_list(names)}"
