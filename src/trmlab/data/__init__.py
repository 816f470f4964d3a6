"""trmlab.data."""
