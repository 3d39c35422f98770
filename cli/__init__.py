"""The ``rlx`` command line: a thin typer app over core and registry."""
