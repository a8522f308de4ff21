"""Unit groups and their physical removal (surgery), MACs, budget allocation and compensation."""
