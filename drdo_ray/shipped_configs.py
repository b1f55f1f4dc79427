"""The configs drdo-ray ships: the repository's ``configs/`` folder, which an installed wheel
carries as ``drdo_ray/configs`` (setup.py maps it there). ``--config`` takes a file path or one of
these by name (``--config opt-1.3b-ultrafeedback``); ``drdo-ray configs`` lists them."""

from __future__ import annotations

from pathlib import Path

import yaml

# An installed wheel holds the configs inside the package; a checkout (or an editable install of
# it) keeps them beside the package, where users edit them.
PACKAGED = Path(__file__).resolve().parent / "configs"
CHECKOUT = Path(__file__).resolve().parents[1] / "configs"


def configs_dir() -> Path:
    """The folder the shipped configs are read from."""
    return PACKAGED if PACKAGED.is_dir() else CHECKOUT


def shipped_configs() -> dict[str, Path]:
    """{name: path} of every shipped config (the file name without ``.yaml``), sorted by name."""
    folder = configs_dir()
    return {path.stem: path for path in sorted(folder.glob("*.yaml"))} if folder.is_dir() else {}


def resolve_config_file(value: str) -> Path | None:
    """The file ``--config value`` means: the path if it exists, else the shipped config it names
    (``NAME``, ``NAME.yaml`` or ``configs/NAME.yaml``, so the documented commands also run where
    only the package is installed); None when it is neither."""
    path = Path(value)
    if path.is_file():
        return path
    name = path.name.removesuffix(".yaml")
    if path.parent in (Path(), Path("configs")):
        return shipped_configs().get(name)
    return None


def describe(path: Path) -> str:
    """One line on what a config runs: a pipeline's title, else its stage sections."""
    loaded = yaml.safe_load(path.read_text())
    if not isinstance(loaded, dict):
        return "not a mapping"
    if isinstance(loaded.get("pipeline"), dict):
        return f"pipeline: {loaded['pipeline'].get('title') or path.stem}"
    return "sections for single commands: " + ", ".join(loaded)
