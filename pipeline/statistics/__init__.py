"""What scorers measure on calibration data: activation collectors, causal interventions, clustering."""
