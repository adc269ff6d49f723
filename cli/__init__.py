"""The `cream` command line: thin Typer commands that parse, build a config and call one function."""
