"""Search spaces declared define-by-run inside an experiment function."""

from protolab.space._space import Distribution, Space

__all__ = ["Distribution", "Space"]
