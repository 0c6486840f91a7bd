"""attnrec's video plugin (under construction in this change)."""
