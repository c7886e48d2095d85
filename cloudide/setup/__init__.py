"""`cloudide setup`: the operator's path from an AWS account to a deployed stack (see command.py)."""

from cloudide.setup.command import register

__all__ = ["register"]
