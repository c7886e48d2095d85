"""What one correction is: a moto behaviour, the AWS behaviour it should be, the patch, and its proof."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Correction:
    """One way moto 5.2.5 answers differently from AWS, and the patch that makes it answer as AWS.

    `probe` is the proof: it makes the calls that tell the two behaviours apart and raises
    AssertionError unless it sees AWS's. It must fail on plain moto and pass once the corrections are
    installed (`cloudide.offline.moto_fixes.proof` runs both sides); a correction whose probe passes on
    plain moto is no longer needed.
    """

    name: str
    moto: str
    """What moto 5.2.5 does."""
    aws: str
    """What AWS does (and so what moto does once corrected)."""
    install: Callable[[], None]
    probe: Callable[[], None]
