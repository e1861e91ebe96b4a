"""Chain daemon processes: configuration, the CTBC replica, its gRPC services and metrics."""
