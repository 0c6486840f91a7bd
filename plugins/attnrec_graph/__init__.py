"""attnrec's graph plugin (under construction in this change)."""
