"""Resource quantities (`100m`, `1.5`, `128Mi`, `1G`, `2e3`) as exact numbers.

Kubernetes writes CPU and memory amounts as decimal numbers with an SI suffix (`m`, `k`,
`M`, ...), a binary suffix (`Ki`, `Mi`, ...) or a decimal exponent (`e3`). They are parsed
here into `fractions.Fraction`, never into floats: the scheduler adds and compares them,
and `100m + 200m` must equal `300m` exactly, or a node that is exactly full would look
over capacity. Parsing follows `apimachinery/pkg/api/resource`, including its error
messages, which users see in validation errors.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

FORMAT_REGEX = r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
FORMAT_MESSAGE = f"quantities must match the regular expression '{FORMAT_REGEX}'"
SUFFIX_MESSAGE = "unable to parse quantity's suffix"
EXPONENT_MESSAGE = "quantity's exponent is out of range"
MAX_EXPONENT = 100

_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15,
            "E": 18}
# FORMAT_REGEX, which users see, matches the same strings as this, but a digit after
# the number may be read by either of its groups: a long run of digits that fails at
# its end is tried split at every place (quadratic; 8,000 digits took 3 s). Here the
# number takes every digit (possessively) and a suffix can only begin with a letter or
# a sign.
_SHAPE = re.compile(r"[+-]?[0-9.]++(?:[eEinumkKMGTP]++[-+]?+[0-9]*+|[-+][0-9]*+)?")
# Digits a number may have: Python refuses to convert longer ones (sys.int_info), and
# converting is quadratic in the length; a thousand is far past any real amount.
MAX_DIGITS = 1000
_NUMBER = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)")
_EXPONENT = re.compile(r"[eE][+-]?[0-9]+")


class QuantityError(ValueError):
    """A quantity that Kubernetes would refuse; the message is Kubernetes' own."""


def parse_quantity(value: str | int | float) -> Fraction:
    """The exact amount `value` stands for: `parse_quantity("100m") == Fraction(1, 10)`.

    Numbers are accepted as JSON gives them (`cpu: 2`, `cpu: 0.5`); a float is read from
    its shortest decimal form, so 0.1 means one tenth, not the nearest binary fraction.
    """
    if isinstance(value, bool):
        raise QuantityError(FORMAT_MESSAGE)
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise QuantityError(FORMAT_MESSAGE)
        return Fraction(repr(value))
    if not isinstance(value, str):
        raise QuantityError(FORMAT_MESSAGE)
    if not _SHAPE.fullmatch(value):
        raise QuantityError(FORMAT_MESSAGE)
    number = _NUMBER.match(value)
    if number is None:
        raise QuantityError(FORMAT_MESSAGE)
    if len(number.group(0)) > MAX_DIGITS:
        raise QuantityError(f"quantities must have at most {MAX_DIGITS} digits")
    amount = Fraction(number.group(0))
    suffix = value[number.end():]
    if suffix in _BINARY:
        return amount * Fraction(1024) ** _BINARY[suffix]
    if suffix in _DECIMAL:
        return amount * Fraction(10) ** _DECIMAL[suffix]
    if _EXPONENT.fullmatch(suffix):
        # Leading zeros aside, an exponent of more than 3 digits is out of range: checked
        # before int(), which refuses (with a ValueError of its own) thousands of digits.
        digits = suffix[1:].lstrip("+-").lstrip("0") or "0"
        exponent = int(digits[:4]) * (-1 if suffix[1] == "-" else 1)
        if len(digits) > 3 or abs(exponent) > MAX_EXPONENT:
            # Exact arithmetic on 10**1e9 would hang whoever parses it.
            raise QuantityError(f"{EXPONENT_MESSAGE} (at most {MAX_EXPONENT} either way)")
        return amount * Fraction(10) ** exponent
    raise QuantityError(SUFFIX_MESSAGE)


def format_quantity(value: Fraction | int, *, binary: bool = False) -> str:
    """Kubernetes' canonical form: `Fraction(1, 10)` → `100m`, `134217728` → `128Mi` (binary).

    Amounts finer than a nano-unit are rounded up to one, as Kubernetes does, so that a
    formatted request never asks for less than the parsed one.
    """
    amount = Fraction(value)
    sign = "-" if amount < 0 else ""
    amount = abs(amount)
    if amount == 0:
        return "0"
    if binary and amount.denominator == 1:
        for suffix, power in sorted(_BINARY.items(), key=lambda item: -item[1]):
            scaled = amount / 1024**power
            if scaled.denominator == 1:
                return f"{sign}{scaled.numerator}{suffix}"
        # Below 1Ki, or not a multiple of it: decimal is the shorter honest form.
    for suffix, exponent in sorted(_DECIMAL.items(), key=lambda item: -item[1]):
        scaled = amount / Fraction(10) ** exponent
        if scaled.denominator == 1:
            return f"{sign}{scaled.numerator}{suffix}"
    return f"{sign}{math.ceil(amount * 10**9)}n"
