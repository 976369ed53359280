"""Problem families, one module each, plus classical solvers in `problems/solvers/`."""
