"""trmlab.evaluation."""
