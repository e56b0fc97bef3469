"""The bertserve server: gRPC front, dynamic batcher, onnxruntime back end (``bertserve serve``)."""
