"""A module whose mtime the --reload test touches."""
