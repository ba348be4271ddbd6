"""`python -m fusionjax`: the command line (fusionjax.cli)."""

from fusionjax import cli

cli.run()
