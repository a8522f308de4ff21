"""Latency as a budget: per-layer latency tables measured on the target runtime (layers.py: what is
measured; table.py: measuring and caching), the full-model prediction from them (predict.py), and
candidate plans measured whole on the target (candidates.py) to correct the prediction."""
