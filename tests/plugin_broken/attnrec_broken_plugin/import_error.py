"""A plugin whose dependency is not installed: importing it raises ModuleNotFoundError."""

import attnrec_missing_dependency  # noqa: F401  (deliberately absent)
