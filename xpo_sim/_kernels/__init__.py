"""Numba kernels (``@njit(cache=True)``): arrays in, arrays out, no validation.

The public, validated entry points are in :mod:`xpo_sim.soft` and
:mod:`xpo_sim.trajectories`; each kernel's plain-Python version is its ``py_func``.
"""
