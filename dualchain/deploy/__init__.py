"""The `dualchain` command line, configuration and launchers."""
