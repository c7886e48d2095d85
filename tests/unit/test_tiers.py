"""Tiers are the only task sizes users can pick; each must be a CPU/memory pair Fargate accepts."""

from __future__ import annotations

import pytest
from sessions.tiers import TIERS, Tier, is_valid_fargate_size

# Fargate's Linux task sizes (docs/aws-facts.md): CPU units -> accepted memory (MiB).
FARGATE_SIZES = {
    256: {512, 1024, 2048},
    512: set(range(1024, 4097, 1024)),
    1024: set(range(2048, 8193, 1024)),
    2048: set(range(4096, 16385, 1024)),
    4096: set(range(8192, 30721, 1024)),
}


@pytest.mark.parametrize("tier", TIERS.values(), ids=list(TIERS))
def test_every_tier_is_a_fargate_size(tier: Tier) -> None:
    assert tier.memory in FARGATE_SIZES[tier.cpu]


def test_tiers_grow_in_both_cpu_and_memory() -> None:
    tiers = list(TIERS.values())
    assert [t.cpu for t in tiers] == sorted({t.cpu for t in tiers})
    assert [t.memory for t in tiers] == sorted({t.memory for t in tiers})


@pytest.mark.parametrize(
    ("cpu", "memory"),
    [(512, 512), (256, 4096), (1024, 1024), (1024, 2500), (300, 512), (8192, 16384)],
)
def test_sizes_fargate_refuses_are_refused(cpu: int, memory: int) -> None:
    assert not is_valid_fargate_size(cpu, memory)
    with pytest.raises(ValueError, match=f"{cpu} CPU / {memory} MiB"):
        Tier("bad", cpu, memory)


def test_half_a_vcpu_needs_a_gigabyte() -> None:
    """The original spec's 0.5 vCPU / 512 MB is not a Fargate size; 0.5 vCPU / 1 GB is."""
    with pytest.raises(ValueError):
        Tier("spec", 512, 512)
    assert Tier("medium", 512, 1024).memory == 1024


@pytest.mark.parametrize(("cpu", "memories"), FARGATE_SIZES.items())
def test_every_fargate_size_is_accepted(cpu: int, memories: set[int]) -> None:
    assert all(is_valid_fargate_size(cpu, memory) for memory in memories)
