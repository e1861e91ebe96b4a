"""The server node process: client API, upload verification, aggregation, model distribution."""
