"""Named task sizes. Every tier is checked against the CPU/memory pairs Fargate accepts at import.

Fargate rejects other pairs at RunTask time (docs/aws-facts.md): 0.5 vCPU with 512 MiB, which the original
spec asked for, is one of them. Failing at import turns a bad edit into a failed deploy test, not a
session that never starts.
"""

from __future__ import annotations

from dataclasses import dataclass

# vCPU units -> the memory sizes (MiB) Fargate accepts with them.
_FARGATE_MEMORY: dict[int, range | tuple[int, ...]] = {
    256: (512, 1024, 2048),
    512: range(1024, 4096 + 1, 1024),
    1024: range(2048, 8192 + 1, 1024),
    2048: range(4096, 16384 + 1, 1024),
    4096: range(8192, 30720 + 1, 1024),
}


def is_valid_fargate_size(cpu: int, memory: int) -> bool:
    return memory in _FARGATE_MEMORY.get(cpu, ())


@dataclass(frozen=True)
class Tier:
    name: str
    cpu: int  # CPU units (1024 = 1 vCPU)
    memory: int  # MiB

    def __post_init__(self) -> None:
        if not is_valid_fargate_size(self.cpu, self.memory):
            raise ValueError(f"tier {self.name}: {self.cpu} CPU / {self.memory} MiB is not a Fargate size")


TIERS: dict[str, Tier] = {
    tier.name: tier
    for tier in (
        Tier("small", 256, 512),
        Tier("medium", 512, 1024),
        Tier("large", 1024, 2048),
        Tier("xlarge", 2048, 4096),
    )
}
