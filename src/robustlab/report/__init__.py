"""Reports of stored runs: one self-contained HTML page (tables + inline SVG plots) and its JSON.

``write_report(store, run_id, out_dir)`` writes ``<run_id>.html`` and ``<run_id>.json``;
``build_report(store, run_id)`` returns the JSON-able content. Both read records from the store only.
"""

from robustlab.report.build import build_report, write_report

__all__ = ["build_report", "write_report"]
