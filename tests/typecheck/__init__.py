"""Files type-checked by mypy in ``make lint``, never run: ``assert_type`` pins what a
checker infers for the public decorators, and each ``# type: ignore[code]`` is a
negative check (mypy strict reports an ignore that is not needed, so the line must
really be an error)."""
