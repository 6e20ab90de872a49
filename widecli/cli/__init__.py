"""The command line: Typer commands (`app`) and everything printed to the terminal (`render`)."""
