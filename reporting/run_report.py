"""The run report: one HTML page (templates/report.html.j2) with PNG figures, viewable offline.

Training curves of both phases (fine-tune start marked), the confusion matrix
and the metrics against the baseline with the blessing decision, a data
summary (ingest outcomes, class balance, image sizes, anomalies, and TFDV's
own statistics page), a diagram of the model, and sample predictions of the
candidate on eval images. Everything is read from the run's artifacts: each
section of the page by reporting.report_sections, its figures drawn by
reporting.report_figures; this module writes the page whole or not at all.
"""

from __future__ import annotations

import os
import pathlib
import shutil

import jinja2

from contract import layout
from contract.layout import RunLayout
from reporting import report_sections
from reporting.run_summary import RunSummary

_TEMPLATES = jinja2.Environment(loader=jinja2.FileSystemLoader(pathlib.Path(__file__).parent / "templates"),
                                autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                                lstrip_blocks=True)


def write_report(summary: RunSummary, output_dir: str | os.PathLike, training_config: dict,
                 ingest_report: dict | None) -> pathlib.Path:
    """Writes <output_dir>/report/index.html and its figures; returns the page's path.

    The page and its figures are written to a hidden folder that replaces the
    report folder only when complete: a failure (a full disk, say) leaves no
    half report, and the hidden folder is removed.
    """
    final = pathlib.Path(RunLayout(pathlib.Path(output_dir)).report_dir)
    folder = final.with_name(f".{final.name}.incoming")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    try:
        page = report_sections.page(summary, folder, training_config, ingest_report)
        (folder / layout.REPORT_PAGE).write_text(_TEMPLATES.get_template("report.html.j2").render(page))
        shutil.rmtree(final, ignore_errors=True)
        folder.rename(final)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return final / layout.REPORT_PAGE
