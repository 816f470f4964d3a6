"""trmlab.interop."""
