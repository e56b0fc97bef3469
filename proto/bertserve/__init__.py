"""bertserve: BERT features over gRPC, made fast with ONNX Runtime."""

__version__ = "0.1.0"
