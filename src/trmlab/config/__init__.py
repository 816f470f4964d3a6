"""trmlab.config."""
