"""The constants of Philox-4x32-10 and of the Box-Muller transform that :mod:`zoo_dataset.counter_rng`
(tensor form) and :mod:`zoo_dataset.philox_cpu` (compiled loops) share; kept in a module of their
own so that neither imports the other for them. Changing any of them changes every drawn number:
bump ``counter_rng.GENERATOR`` with it."""

from __future__ import annotations

import math

import numpy as np

MASK32 = 0xFFFFFFFF
PHILOX_M = (0xD2511F53, 0xCD9E8D57)
PHILOX_W = (0x9E3779B9, 0xBB67AE85)
ROUNDS = 10

# Box-Muller's constants, each exactly a float32 (the compiled loops and the tensor ops use the same values)
SQRT2 = float(np.float32(math.sqrt(2)))  # the mantissa is reduced to (sqrt(1/2), sqrt(2)]
LN2_SPLIT = (0.693145751953125, float(np.float32(math.log(2) - 0.693145751953125)))  # high part: 16 bits
LOG_SERIES = tuple(float(np.float32(2 / k)) for k in (1, 3, 5, 7, 9))  # ln x = s * sum(c_k s^2k), s = (x-1)/(x+1)
SIN_SERIES = tuple(float(np.float32((-1) ** k / math.factorial(2 * k + 1))) for k in (1, 2, 3, 4))
COS_SERIES = tuple(float(np.float32((-1) ** k / math.factorial(2 * k))) for k in (1, 2, 3, 4, 5))
ANGLE_STEP = float(np.float32(2 * math.pi / 2**24))  # radians per unit of u2 * 2**24
