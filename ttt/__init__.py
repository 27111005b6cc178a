"""Test-Time Training layers (TTT-Linear, TTT-MLP) and the TTT language model."""
