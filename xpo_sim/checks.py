r"""Argument checks for every public entry point: one definition of each check.

Each function takes the argument's *name* (as the caller spells it) and its value, returns
the value in canonical form (``int``, ``float``, ``str``) and otherwise raises a
``ValueError`` that names the argument, says what it must be and shows what it got. They
reject what Python would silently coerce: ``True`` is not an int, ``"0.1"`` is not a number,
``1.7`` is not a round number, NaN is not finite.

Public functions and classes validate at their edge and then call private, unchecked
internals; the round loop of :func:`xpo_sim.run` validates β, the rounds and the options
once, never inside a round. Modules call these as ``checks.<name>(…)`` (attribute lookup),
so a test can count the calls.
"""

from __future__ import annotations

import math
import numbers
from typing import Iterable

import numpy as np

__all__ = ["integer", "real", "positive", "nonnegative", "probability", "choice", "box", "beta"]

# β range in which the exact core is exact in float64 (see ``beta``)
BETA_MIN = 1e-300
BETA_MAX = 1e300


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def integer(name: str, value, minimum: int | None = 1, maximum: int | None = None) -> int:
    """``value`` as an int in [minimum, maximum] (a Python or numpy integer, not a bool,
    not a float, not a string)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int{_range_text(minimum, maximum)}, got {value!r}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be an int{_range_text(minimum, maximum)}, got {value!r}")
    return int(value)


def _range_text(minimum, maximum) -> str:
    if minimum is not None and maximum is not None:
        return f" in [{minimum}, {maximum}]"
    if minimum is not None:
        return f" >= {minimum}"
    if maximum is not None:
        return f" <= {maximum}"
    return ""


def real(name: str, value, *, low: float = -math.inf, high: float = math.inf,
         low_open: bool = False, high_open: bool = False, finite: bool = True) -> float:
    """``value`` as a float in the interval from ``low`` to ``high`` (closed unless
    ``low_open``/``high_open``); finite unless ``finite=False``. NaN is always rejected."""
    lo = "(" if low_open else "["
    hi = ")" if high_open else "]"
    what = "a finite number" if finite else "a number"
    if low != -math.inf or high != math.inf:
        what += f" in {lo}{low:g}, {high:g}{hi}"
    if not _is_real(value):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    number = float(value)
    ok = not math.isnan(number) and (math.isfinite(number) or not finite)
    ok = ok and (number > low if low_open else number >= low) and (number < high if high_open else number <= high)
    if not ok:
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return number


def positive(name: str, value) -> float:
    """A finite number > 0."""
    if not _is_real(value) or not (math.isfinite(float(value)) and float(value) > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def nonnegative(name: str, value) -> float:
    """A finite number >= 0."""
    if not _is_real(value) or not (math.isfinite(float(value)) and float(value) >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def probability(name: str, value, low_open: bool = False, high_open: bool = False) -> float:
    """A probability in [0, 1] (endpoints excluded on request)."""
    return real(name, value, low=0.0, high=1.0, low_open=low_open, high_open=high_open)


def choice(name: str, value, options: Iterable[str]) -> str:
    """One of ``options`` (compared as given; the message lists them)."""
    options = tuple(options)
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"unknown {name} {value!r}: expected one of {options}")
    return value


def box(name: str, value) -> tuple[float, float]:
    """A pair (lo, hi) of finite numbers with lo <= hi."""
    try:
        lo, hi = value
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair of finite numbers lo <= hi, got {value!r}") from None
    if not (_is_real(lo) and _is_real(hi)) or not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise ValueError(f"{name} must be a pair of finite numbers lo <= hi, got {value!r}")
    return float(lo), float(hi)


def beta(value, name: str = "beta") -> float:
    """The KL weight β as a float in [BETA_MIN, BETA_MAX] = [1e-300, 1e300]: positive and
    finite, and inside the range where the exact core's float64 arithmetic stays exact.

    What holds on this range (``tests/test_numeric_edges.py``), for every reward table a
    TokenMDP accepts (|path sums| ≤ 2^1022): 1/β is a normal float (a subnormal β such as
    1e-310 makes 1/β overflow, and 0·(1/β) = NaN); where Q*/β would overflow the sweep works
    with (Q* − max Q*)/β ≤ 0 instead, so nothing overflows even where r/β would; at
    β = BETA_MIN, J*(π*) = E_ρ max_τ r(τ) to the last bit and π* is the arg max; at
    β = BETA_MAX, J* = E_ref r + Var_ref r/(2β) to a few ulp and regret(π_ref) =
    Var_ref r/(2β) to 1e-9 relative (tested) for rewards of order ≥ 1e-8 (for
    smaller reward differences (V* − Q*)/β would be a subnormal float and the regret would
    keep fewer digits — a bound on β alone cannot rule that out)."""
    number = positive(name, value)
    if not BETA_MIN <= number <= BETA_MAX:
        raise ValueError(f"{name} must lie in [{BETA_MIN:g}, {BETA_MAX:g}] (the range the exact float64 "
                         f"computation supports), got {value!r}")
    return number


def boolean(name: str, value) -> bool:
    """``value`` as a bool: ``True`` or ``False`` (or a numpy bool), not a string such as
    ``'False'`` (truthy), not 0/1."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


__all__ += ["boolean"]


def real_pair(name: str, value, *, low: float = -math.inf, high: float = math.inf,
              low_open: bool = False, high_open: bool = False) -> tuple[float, float]:
    """``value`` as a pair of floats, each in the interval from ``low`` to ``high`` (closed
    unless ``low_open``/``high_open``), e.g. Adam's (β₁, β₂) in [0, 1). A string, a scalar,
    a pair of strings or of bools, or a sequence of another length is refused."""
    lo = "(" if low_open else "["
    hi = ")" if high_open else "]"
    what = f"a pair of finite numbers in {lo}{low:g}, {high:g}{hi}"
    if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list, np.ndarray)) or len(value) != 2:
        raise ValueError(f"{name} must be {what}, got {value!r}")
    try:
        return tuple(real(f"{name}[{i}]", item, low=low, high=high, low_open=low_open, high_open=high_open)
                     for i, item in enumerate(value))
    except ValueError:
        raise ValueError(f"{name} must be {what}, got {value!r}") from None


# Bytes one request may allocate before it is refused; None: this machine's physical memory.
MEMORY_LIMIT: int | None = None


def memory_limit() -> int:
    """The byte budget :func:`memory` enforces: ``MEMORY_LIMIT``, or the physical memory."""
    if MEMORY_LIMIT is not None:
        return int(MEMORY_LIMIT)
    try:
        import os

        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # not POSIX: a generous fixed cap
        return 64 * 2**30


def format_bytes(n_bytes: float) -> str:
    """``n_bytes`` in B/KiB/MiB/GiB/TiB…, three significant digits."""
    size = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if size < 1024 or unit == "EiB":
            return f"{size:.3g} {unit}"
        size /= 1024
    return f"{size:.3g} EiB"  # pragma: no cover


def memory(name: str, value, n_bytes: int, what: str) -> None:
    """Refuse, before anything is allocated, a request whose arrays would need ``n_bytes``
    (an exact Python int: no overflow) when that exceeds :func:`memory_limit`: a ValueError
    naming the argument ``name`` = ``value``, what the memory is for and how much it is.
    One definition for every size argument (instance sizes, batch sizes, dataset sizes)."""
    limit = memory_limit()
    if n_bytes > limit:
        raise ValueError(f"{name}={value!r} would need {format_bytes(n_bytes)} of memory for {what}, more than "
                         f"the {format_bytes(limit)} available (xpo_sim.checks.MEMORY_LIMIT); choose a smaller {name}")


__all__ += ["real_pair", "memory", "memory_limit", "format_bytes"]


# Bytes of one sampled response at the least (a one-token response: its state, action,
# length and uniform draw, 8 bytes each); longer responses and the copies a round makes need more.
RESPONSE_BYTES = 32


def responses_fit(name: str, value, n_responses: int, what: str = "one round's sampled responses") -> None:
    """Refuse (:func:`memory`) a size argument whose round would sample ``n_responses``
    responses (at least :data:`RESPONSE_BYTES` each) beyond the memory."""
    memory(name, value, int(n_responses) * RESPONSE_BYTES,
           f"{what} ({n_responses:,} responses, at least {RESPONSE_BYTES} bytes each)")


__all__ += ["responses_fit"]


def token_mdp(value, name: str = "mdp"):
    """``value`` itself when it is a :class:`~xpo_sim.mdp.TokenMDP`, else a ValueError naming
    ``name`` and the type it got (not an AttributeError from inside)."""
    from xpo_sim.mdp import TokenMDP  # imported on use: this module stays free of package imports

    if not isinstance(value, TokenMDP):
        raise ValueError(f"{name} must be a TokenMDP, got {type(value).__name__}")
    return value


__all__ += ["token_mdp"]


def auto_boolean(name: str, value) -> bool | str:
    """``value`` as True, False or the string ``"auto"`` (a switch whose default decides by
    size, e.g. ``progress``); not ``'yes'``, not 0/1."""
    if isinstance(value, str) and value == "auto":
        return value
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True, False or 'auto', got {value!r}")
    return bool(value)


__all__ += ["auto_boolean"]


# Bytes of one round of a run at the least (its row of metrics and its bookkeeping).
ROUND_BYTES = 256


def rounds_fit(name: str, value) -> int:
    """``value`` as an int >= 1 whose run's per-round rows (at least :data:`ROUND_BYTES` each)
    fit in the memory (:func:`memory`); the one check of a run's length, shared by
    :func:`xpo_sim.run` and the scripts' ``--rounds``-like flags."""
    rounds = integer(name, value, minimum=1)
    memory(name, value, (rounds + 1) * ROUND_BYTES,
           f"the run's per-round rows and bookkeeping (at least {ROUND_BYTES} bytes a round)")
    return rounds


__all__ += ["rounds_fit"]


# The most seeds (replicates) a script accepts: each adds a run at every grid point.
MAX_SEEDS = 10_000


def seeds(name: str, value) -> int:
    """A script's seed count as an int in [1, :data:`MAX_SEEDS`] (a billion seeds is not a
    sweep anyone can wait for, and would hang building the configs)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int in [1, {MAX_SEEDS}], got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    if value > MAX_SEEDS:
        raise ValueError(f"{name} must be at most {MAX_SEEDS} (each seed adds a run at every grid point), got {value}")
    return int(value)


__all__ += ["seeds"]
