"""Import and export formats of the trajectory store.

Each format module converts between our RLDS datasets and one outside
format; none of them is imported until used, so their heavy dependencies
(h5py, minari, datasets) stay optional. The registries below give the CLI
one signature per direction:

- an exporter ``(dataset, out, allow_lossy=False) -> report or None``;
- an importer ``(src, out_path) -> None`` writing a seedrl dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable
from seedrl.data.errors import DataError


def _export_tfds(dataset, out, allow_lossy=False):
    from seedrl.data.formats.tfds import export_tfds

    return export_tfds(dataset, out, allow_lossy=allow_lossy)


def _import_tfds(src, out):
    from seedrl.data.formats.tfds import import_tfds

    import_tfds(src, out)


def _export_minari(dataset, out, allow_lossy=False):
    from seedrl.data.formats.minari import export_minari

    out = Path(out)
    return export_minari(dataset, out.name, root=out.parent, allow_lossy=allow_lossy)


def _import_minari(src, out):
    from seedrl.data.formats.minari import import_minari

    import_minari(src, out)


def _export_hf(dataset, out, allow_lossy=False):
    from seedrl.data.formats.hf import export_hf

    return export_hf(dataset, out, allow_lossy=allow_lossy)


def _import_hf(src, out):
    from seedrl.data.formats.hf import import_hf

    import_hf(src, out)


EXPORTERS: dict[str, Callable[..., Any]] = {"tfds": _export_tfds, "minari": _export_minari, "hf": _export_hf}
IMPORTERS: dict[str, Callable[..., Any]] = {"tfds": _import_tfds, "minari": _import_minari, "hf": _import_hf}


def detect_format(path: str) -> str:
    """Guess a dataset directory's format from the files it holds."""
    p = Path(path)
    if (p / "dataset.json").exists():
        return "seedrl"
    if (p / "features.json").exists() and (p / "dataset_info.json").exists():
        return "tfds"
    if (p / "data" / "metadata.json").exists() or (p / "metadata.json").exists() and (p / "data").is_dir():
        return "minari"
    if (p / "dataset_info.json").exists() or (p / "dataset_dict.json").exists() or list(p.glob("*.parquet")):
        return "hf"
    if (p / "state.json").exists():
        return "hf"
    raise DataError(f"cannot tell the format of {path!r}; pass --from seedrl|tfds|minari|hf")


__all__ = ["EXPORTERS", "IMPORTERS", "detect_format"]
