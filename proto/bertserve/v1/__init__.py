"""Generated protobuf and gRPC stubs for bertserve.v1 (``./dev proto`` regenerates them)."""
