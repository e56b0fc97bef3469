"""The Open Inference Protocol (KServe v2) front door: codec and servicer."""
