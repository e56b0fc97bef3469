"""The bertserve client: stubs, a Python client and the CLI (grpcio, protobuf, numpy only)."""
