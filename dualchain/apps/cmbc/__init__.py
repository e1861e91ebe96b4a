"""The CMBC application: the management state machine that proof of work orders blocks for."""
