"""A drift check's report: one HTML page (reporting/templates/drift.html.j2) with a PNG of what moved, and the
check's JSON beside it, in the run report's style."""

from __future__ import annotations

import json
import pathlib
import re

import jinja2
import numpy as np

from monitoring import measure

PAGE = "index.html"
FIGURE = "distributions.png"
RESULT = "drift.json"
STAGING_PREFIX = ".check-"  # a report being written (monitor names each check-<time>/): renamed once whole
STAGING_SUFFIX = re.compile(r"[0-9]{8}T[0-9]{12}Z")  # the time monitor.check names a check's folder by
_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(pathlib.Path(__file__).resolve().parents[1] / "reporting" / "templates"),
    autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def _projection(window: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both samples on the first two principal components of the two together."""
    pooled = np.concatenate([window, reference]).astype(np.float64)
    centred = pooled - pooled.mean(axis=0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    projected = centred @ axes[:2].T if len(axes) >= 2 else np.zeros((len(pooled), 2))
    return projected[:len(window)], projected[len(window):]


def figure(window: dict[str, np.ndarray], reference: dict[str, np.ndarray], moved: set[str],
           path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    names = [name for name in (*measure.SIZES, measure.BRIGHTNESS, measure.SATURATION, measure.SCORE,
                               measure.FEATURES) if len(window.get(name, ())) and len(reference.get(name, ()))]
    columns = 3
    rows = max(1, -(-len(names) // columns))
    figure_, axes = plt.subplots(rows, columns, figsize=(12, 3.4 * rows), squeeze=False)
    for axis, name in zip(axes.flat, names):
        title = f"{name}{' (moved)' if name in moved else ''}"
        if name == measure.FEATURES:
            ours, theirs = _projection(window[name], reference[name])
            axis.scatter(theirs[:, 0], theirs[:, 1], s=6, alpha=0.5, label="reference")
            axis.scatter(ours[:, 0], ours[:, 1], s=6, alpha=0.5, label="window")
            axis.set_xlabel("first principal component")
        else:
            values = np.concatenate([window[name], reference[name]])
            bins = np.histogram_bin_edges(values, bins=30)
            axis.hist(reference[name], bins=bins, density=True, alpha=0.5, label="reference")
            axis.hist(window[name], bins=bins, density=True, alpha=0.5, label="window")
        axis.set_title(title, color="#a00" if name in moved else "#222")
        axis.legend(fontsize=8)
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(names):]:
        axis.axis("off")
    figure_.tight_layout()
    figure_.savefig(path, dpi=80)
    plt.close(figure_)


def write(folder: pathlib.Path, result: dict, window: dict[str, np.ndarray], reference: dict[str, np.ndarray],
          tfdv: dict | None = None) -> pathlib.Path:
    """Writes the figure, the page and the result's JSON into `folder`, published whole (written under a hidden
    name beside it, renamed into place: a check killed or stopped by a full disk leaves no half report); returns
    the page. Called under the root's lease: a hidden folder a killed check left is removed."""
    from contract import storage

    folder.parent.mkdir(parents=True, exist_ok=True)
    storage.remove_staging(str(folder.parent), [STAGING_PREFIX], suffix=STAGING_SUFFIX)
    staging = folder.parent / f".{folder.name}"
    try:
        staging.mkdir()
        moved = {test["name"] for test in result["tests"] if test["drift"]}
        figure(window, reference, moved, staging / FIGURE)
        page = _TEMPLATES.get_template("drift.html.j2").render(result=result, checked_at=result["checked_at"],
                                                               figure=FIGURE, tfdv=tfdv)
        (staging / PAGE).write_text(page)
        (staging / RESULT).write_text(json.dumps(result, indent=2))
        staging.rename(folder)
    finally:
        storage.backend.rmtree(str(staging))
    return folder / PAGE
