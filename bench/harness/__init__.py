"""The pieces of `make bench` (bench/bench.py): the server under test, the load drivers, the report."""
