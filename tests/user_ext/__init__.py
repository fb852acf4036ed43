"""A researcher's own extensions, written outside xpo_sim with its public API only: an
instance family, an algorithm, a policy-class factory and an oracle. The sweep tests name
them by spec (``"user_ext.family:staircase"`` …) with ``tests/`` on ``sys.path``."""
