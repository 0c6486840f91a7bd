"""attnrec's ecommerce plugin (under construction in this change)."""
