"""Deliberately broken attnrec plugins, one failure mode per entry point.

``broken_import`` fails at import (a missing dependency), ``broken_hook`` raises inside its
hook after registering a valid scorer, which attnrec must then forget again, and
``broken_clash`` registers a scorer named like a built-in one.
"""
