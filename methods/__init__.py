"""Methods, one module each, plus shared building blocks (`nets`, optimisation)."""
