"""Recovery by training: distillation from the dense teacher and the iterative prune/fine-tune schedule."""
