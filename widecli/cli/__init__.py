"""The command line: the Typer app (`app`), its commands (`commands/`: parse, call one function,
render), the Click patches behind one-line usage errors (`group`), how a command ends (`exits`),
shared options and their parsers (`options`), and everything printed to the terminal (`render/`)."""
