"""Generated protobuf and gRPC stubs of the Open Inference Protocol (KServe v2, package
``inference``); ``./dev proto`` regenerates them."""
