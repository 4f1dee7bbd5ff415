"""Importing this module registers every built-in dataset."""

from bench.data import fashion_mnist, indian_pines, tiny  # noqa: F401
