"""trmlab.training."""
