"""Deliberately broken attnrec plugins, one failure mode per entry point.

``broken_import`` fails at import (a missing dependency), ``broken_hook`` raises inside its
hook after registering a valid scorer, which attnrec must then forget again.
"""
