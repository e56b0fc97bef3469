"""The request path without a protocol: request types, validation, the engine, streams."""
