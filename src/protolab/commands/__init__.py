"""Commands beyond the sweep itself: ``ui``, ``ls``, ``init`` (each imported on use by the CLI)."""

__all__: list[str] = []
