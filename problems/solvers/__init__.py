"""Classical numerical solvers that produce and validate references."""
