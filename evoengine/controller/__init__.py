"""The ask/tell loop: budgets, concurrency, shutdown and resume."""
