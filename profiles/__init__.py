"""Latency measurement: interleaved timing, statistics, and the speedup verdict. Knows sessions and
clocks, not how engines are built."""
