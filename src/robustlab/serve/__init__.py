"""``robustlab serve``: a local, read-only web dashboard over a results store (issue 21).

Pages (server-rendered HTML, no JavaScript, no CDN: the report's inline CSS and inline SVG plots):

- ``/``: the runs, newest first, filtered by suite, status and model;
- ``/run/{id}``: the run's report (:func:`robustlab.report.build_report` rendered by
  :mod:`robustlab.report.html`), built on request and cached by the digest of the run's units
  (:func:`robustlab.store.summary_cache.units_digest`); above it a table of every (model, probe,
  level) group whose cells link to ... (so do the report's own table cells: :mod:`.drill`)
- ``/run/{id}/examples?model=&probe=[&level=][&slice=&value=][&member=][&show=6]``: (no
  ``level``: every level of the probe; ``slice``/``value``: a suite slice, masked as the report's
  slice table masks it; ``member``: the records an attack ensemble's member broke) the first
  ``show`` examples with their inputs regenerated (:mod:`robustlab.report.examples`: clean |
  perturbed | magnified difference images, highlighted text and code diffs), then the records (ids, labels, predictions,
  correct, error, extras), failed and wrong ones first;
- ``/compare?a=&b=``: two runs compared with :func:`robustlab.metrics.compare` (paired permutation
  tests, Benjamini-Hochberg at 5 %);
- ``/suite/{name}``: robustness over time (S32, "Robustness over time: successive LLM versions
  evaluated with one fixed suite"): every probe's accuracy across the suite's runs ordered by
  date, with 95 % bootstrap CIs, and a regression marked wherever ``compare`` of a run with the
  run before it flags a significant drop (BH, 5 %).

The store is opened read-only in spirit: :func:`open_store` refuses a location that does not exist
(nothing is created), a database that is not a robustlab store, and an older or newer schema (a
migration would write); the app only reads. :func:`check_bind` refuses to bind to anything but
loopback without a token; with a token every request must carry it (``X-Robustlab-Token`` or
``Authorization: Bearer`` header, or ``?token=``, which also sets a same-site cookie so links work).

Example::

    robustlab serve --store runs.db                  # http://127.0.0.1:8765
    robustlab serve --host 0.0.0.0 --token s3cret    # then http://host:8765/?token=s3cret
"""

from __future__ import annotations

from robustlab.serve.access import check_bind, open_store

__all__ = ["check_bind", "make_app", "open_store"]


def __getattr__(name: str) -> object:
    if name == "make_app":  # FastAPI is imported only by the command that serves
        from robustlab.serve.app import make_app

        return make_app
    raise AttributeError(f"module 'robustlab.serve' has no attribute {name!r}")
