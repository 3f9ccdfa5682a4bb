"""Registry review: the evidence report a reviewer reads before promoting a model.

``dsnet evaluate`` builds the evidence (:mod:`dsnet.review.evidence`: bootstrap intervals,
champion comparison, error gallery, per-patient table, model card) and renders it as one
self-contained HTML file (:mod:`dsnet.review.report_html`); ``dsnet register`` attaches it
to the model version; ``dsnet registry review`` fetches or rebuilds it
(:mod:`dsnet.review.fetch`). :mod:`dsnet.review.auth` resolves who promotes.
"""
