"""fusionjax's command line in a checkout (`python run.py --help`); installed: `fusionjax`."""

from fusionjax import cli

if __name__ == "__main__":
  cli.run()
