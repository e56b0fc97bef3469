"""The bertserve.v1 front door: codec and servicer."""
