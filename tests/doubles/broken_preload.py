"""A preload module that fails with something other than ImportError."""

raise RuntimeError("bad crew configuration")
