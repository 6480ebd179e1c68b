"""Torch devices named by users (`--device`, settings): read and checked in one place.

`torch.device("cdua")` and a CUDA call on a machine without a GPU both fail with a long
traceback from deep inside torch; these functions turn them into one-line input errors, raised
before any model is loaded or trained.
"""
from __future__ import annotations

import torch

from facetune.errors import InvalidInputError

#: "auto" (or no device given): the first CUDA GPU when there is one, else the CPU.
AUTO = "auto"
#: The device types facetune runs on; torch knows more, which facetune has never been run on.
DEVICE_TYPES: tuple[str, ...] = ("cpu", "cuda", "mps")
_SPELLINGS = "auto, cpu, cuda, cuda:N or mps"


def parse_device(name: str | torch.device | None, where: str = "--device") -> torch.device | None:
    """The device `name` spells, or None for auto; checks the spelling only, not that it exists
    here (a Serve replica on a GPU node may have what the driver lacks)."""
    if name is None or isinstance(name, torch.device):
        device = name
    elif str(name).strip().lower() == AUTO:
        return None
    else:
        try:
            device = torch.device(str(name).strip())
        except (RuntimeError, ValueError):
            raise InvalidInputError(f"{where} {name}: not a device name; use {_SPELLINGS}") from None
    if device is not None and device.type not in DEVICE_TYPES:
        raise InvalidInputError(f"{where} {name}: not a device facetune runs on; use {_SPELLINGS}")
    return device


def resolve_device(name: str | torch.device | None = None, where: str = "--device") -> torch.device:
    """The device to run on: `name` checked to exist on this machine, or for auto (None) the first
    CUDA GPU when there is one, else the CPU."""
    device = parse_device(name, where)
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InvalidInputError(f"{where} {name}: this machine has no CUDA GPU that torch can use; use cpu or auto")
        if device.index is not None and device.index >= count:
            raise InvalidInputError(f"{where} {name}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InvalidInputError(f"{where} {name}: Apple's Metal (mps) is not available here; use cpu or auto")
    return device


def describe_device(device: torch.device) -> str:
    """A device as a person would name it: `cpu`, `cuda:0 (NVIDIA H100 80GB HBM3)`."""
    if device.type != "cuda":
        return device.type
    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
