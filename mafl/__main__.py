from mafl.cli import cli

cli()
