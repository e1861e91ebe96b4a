"""Wire contracts: versioned protobuf packages (``dualchain.v1``) and their generated stubs."""
