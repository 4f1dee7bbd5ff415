"""Importing this module registers every built-in dataset."""

from bench.data import cifar, fashion_mnist, indian_pines, tiny  # noqa: F401
