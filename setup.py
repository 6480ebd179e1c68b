"""Packaging: pyproject.toml holds the project; this adds what its tables cannot say together
with package discovery: the top-level raycfg/ folder ships as the package data `facetune.raycfg`,
so an installed facetune (a wheel on cluster workers) carries its configs."""
from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["facetune", "facetune.*"]), "facetune.raycfg"],
    package_dir={"facetune.raycfg": "raycfg"},
)
