"""Benchmarks: the load generator and the side-by-side comparison with the other ways to get
BERT vectors (``bertserve bench --peers``)."""
