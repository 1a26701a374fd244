"""Tests on a real (local, two-node) Ray cluster."""
