"""attnrec's news plugin (under construction in this change)."""
