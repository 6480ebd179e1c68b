"""facetune.devices: a device named by a user is read and checked once, with one-line errors."""
from __future__ import annotations

import pytest
import torch

from facetune.devices import describe_device, parse_device, resolve_device
from facetune.errors import InvalidInputError


@pytest.fixture
def gpus(monkeypatch):
    """Pretend this machine has `count` CUDA GPUs (0: none)."""

    def have(count: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)

    return have


@pytest.mark.parametrize("name", [None, "auto", "AUTO"])
def test_auto_is_the_cpu_without_a_gpu(name, gpus):
    gpus(0)
    assert resolve_device(name) == torch.device("cpu")


def test_auto_is_the_first_gpu_when_there_is_one(gpus):
    gpus(2)
    assert resolve_device("auto") == torch.device("cuda")


def test_a_gpu_by_number_is_taken_when_it_exists(gpus):
    gpus(2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)


def test_cuda_without_a_gpu_is_refused(gpus):
    gpus(0)
    with pytest.raises(InvalidInputError, match=r"^--device cuda: this machine has no CUDA GPU that torch can use"):
        resolve_device("cuda")


def test_a_gpu_number_past_the_last_is_refused(gpus):
    gpus(2)
    with pytest.raises(InvalidInputError, match=r"^--device cuda:2: this machine has 2 CUDA GPU\(s\), cuda:0 to cuda:1$"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("name, reason", [("cdua", "not a device name"), ("cuda:x", "not a device name"),
                                          ("xla", "not a device facetune runs on")])
def test_a_bad_name_is_refused_whatever_the_machine(name, reason, gpus):
    gpus(1)
    with pytest.raises(InvalidInputError, match=rf"^device {name}: {reason}"):
        parse_device(name, where="device")


def test_parsing_checks_the_spelling_not_the_machine(gpus):
    gpus(0)
    assert parse_device("cuda:3") == torch.device("cuda", 3)  # a Serve replica on a GPU node may have it
    assert parse_device("auto") is None


def test_the_cpu_is_described_by_its_name():
    assert describe_device(torch.device("cpu")) == "cpu"
