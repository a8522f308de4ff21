"""Calibration, training and evaluation data: where datasets come from (sources), how images
become inputs (transforms), and the seeded, class-stratified loaders the stages use (loaders)."""
