"""Packaging that pyproject.toml cannot say: the repository's configs/ folder (where they are
edited) goes into the wheel as drdo_ray/configs, so an installed drdo-ray has its configs."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["drdo_ray*"]), "drdo_ray.configs"],
    package_dir={"drdo_ray.configs": "configs"},
)
