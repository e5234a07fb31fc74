"""The archive: SQL tables, the MAP-Elites grid per island, migration and selection."""
