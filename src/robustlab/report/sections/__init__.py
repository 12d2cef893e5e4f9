"""Domain report sections (ranking, certification, code generation, ...), one file each.

A section is registered in :data:`robustlab.core.registry.report_sections` and has::

    title: str                                        # heading in the report
    def build(self, df, info) -> dict | None: ...     # JSON-able data from the records, or None
    def render(self, data) -> str: ...                # HTML (inline SVG plots, no JavaScript)

``build`` gets the run's expanded records (:func:`robustlab.core.records.frame`) and
``Store.run_info``; it returns None when the run has nothing for this section (it is then omitted).
Use :mod:`robustlab.report.plots` / :mod:`robustlab.report.format` helpers for consistent looks.
"""
