"""Converters from public datasets and other tools' formats into ours.

``run/convert.py --from SOURCE --to TARGET --in FILE --out FILE`` looks the pair up in the
registry (:mod:`.registry`). Each source format lives in its own module of this package, which
registers its converters with :func:`~.registry.converter` and is imported here.
"""

from __future__ import annotations

import malpyeong.prep.converters.axolotl_recipe  # noqa: F401 - registers axolotl -> recipe
from malpyeong.prep.converters import (  # noqa: F401 - importing registers them
    dialogsum_memory,
    flat_qa,
    qmsum_memory,
    qmsum_qa,
)
from malpyeong.prep.converters.registry import (
    CONVERTERS,
    Converted,
    Converter,
    converter,
    find_converter,
)

__all__ = ["CONVERTERS", "Converted", "Converter", "converter", "find_converter"]
