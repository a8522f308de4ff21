"""Errors, registry, artifacts and config: the bottom layer, standard library and PyYAML only."""
