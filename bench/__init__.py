"""physbench harness: runs registered methods on registered problems under equal budgets."""
