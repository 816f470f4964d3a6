"""trmlab.models."""
