"""trmlab.reports."""
