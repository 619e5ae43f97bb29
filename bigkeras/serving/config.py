"""``models.config``: the ``ModelServerConfig`` text proto TF Serving reads at start-up.

One entry per model directory under ``base_dir`` (``<base_dir>/<name>/<integer version>/``),
with its path as the container sees it (``/models/<name>`` with the ``docker run`` line of
``serving_command``), a version policy and version labels (``stable`` -> newest version).
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from bigkeras import checks

CONFIG_FILE = "models.config"
CONTAINER_ROOT = "/models"


def list_versions(model_dir: str | os.PathLike) -> list[int]:
    """The integer version directories of one model, ascending (temporary dirs are skipped)."""
    model_dir = pathlib.Path(model_dir)
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def list_models(base_dir: str | os.PathLike) -> dict[str, list[int]]:
    """``{model name: [versions]}`` for every model directory under ``base_dir`` with a version."""
    base_dir = pathlib.Path(base_dir)
    if not base_dir.is_dir():
        return {}
    models = {p.name: list_versions(p) for p in sorted(base_dir.iterdir()) if p.is_dir()}
    return {name: versions for name, versions in models.items() if versions}


def model_server_config(
    base_dir: str | os.PathLike = "saved_models",
    *,
    num_versions: int = 2,
    labels: Mapping[str, Mapping[str, int]] | None = None,
    container_root: str = CONTAINER_ROOT,
) -> model_server_config_pb2.ModelServerConfig:
    """Build the ``ModelServerConfig`` for every model under ``base_dir``.

    Args:
        base_dir: the export root holding ``<name>/<version>/`` SavedModels.
        num_versions: int, serve the newest ``num_versions`` versions of each model
            (``latest`` version policy), so a label can move between them. Default 2.
        labels: optional ``{model: {label: version}}``; by default every model gets
            ``stable`` -> its newest version (and ``previous`` -> the one before it, when
            served). TF Serving only accepts labels that point at served versions.
        container_root: str, where ``base_dir`` is mounted in the container.

    Returns:
        A ``ModelServerConfig`` with one ``model_config_list`` entry per model.

    Example:
        >>> print(text_format.MessageToString(model_server_config("saved_models")))
    """
    checks.positive_int("num_versions", num_versions)
    models = list_models(base_dir)
    labels = dict(labels or {})
    unknown = sorted(set(labels) - set(models))
    if unknown:
        raise ValueError(f"`labels` names models {unknown} that are not under {os.fspath(base_dir)!r}; found {sorted(models)}.")
    config = model_server_config_pb2.ModelServerConfig()
    for name, versions in models.items():
        served = versions[-num_versions:]
        entry = config.model_config_list.config.add(
            name=name, base_path=f"{container_root.rstrip('/')}/{name}", model_platform="tensorflow"
        )
        entry.model_version_policy.latest.num_versions = num_versions
        chosen = labels.get(name) or _default_labels(served)
        for label, version in chosen.items():
            if version not in served:
                raise ValueError(
                    f"`labels[{name!r}][{label!r}]` is version {version!r}, which is not served; "
                    f"served versions are {served}."
                )
            entry.version_labels[label] = version
    return config


def write_model_config(base_dir: str | os.PathLike = "saved_models", **kwargs) -> pathlib.Path:
    """Write ``<base_dir>/models.config`` covering every model under ``base_dir``.

    Takes the keyword arguments of ``model_server_config``. Written atomically (temp file,
    then rename), so a server polling the file never reads half of it.

    Returns:
        The path of the written file.
    """
    config = model_server_config(base_dir, **kwargs)
    path = pathlib.Path(base_dir) / CONFIG_FILE
    tmp = path.with_name(f".{CONFIG_FILE}.tmp-{os.getpid()}")
    tmp.write_text(text_format.MessageToString(config))
    os.replace(tmp, path)
    return path


def read_model_config(path: str | os.PathLike) -> model_server_config_pb2.ModelServerConfig:
    """Parse a ``models.config`` text proto."""
    return text_format.Parse(pathlib.Path(path).read_text(), model_server_config_pb2.ModelServerConfig())


def _default_labels(served: list[int]) -> dict[str, int]:
    labels = {"stable": served[-1]}
    if len(served) > 1:
        labels["previous"] = served[-2]
    return labels
