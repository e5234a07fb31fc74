"""Mutators behind one interface: model clients and the offline GP mutator."""
