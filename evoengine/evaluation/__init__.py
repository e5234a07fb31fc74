"""Problem loading, the evaluator contract and the sandbox backends."""
