"""The review report: the evidence a reviewer reads before promoting a model.

``dsnet evaluate`` builds the evidence (`evidence`: bootstrap intervals, champion
comparison, error gallery, per-patient table, model card) and renders it as one
self-contained HTML file (`report_html`), through `step`. ``dsnet register`` attaches it to
the model version and ``dsnet registry review`` fetches or rebuilds it
(`dsnet.lifecycle.registry.review`); `dsnet.lifecycle.registry.auth` resolves who promotes.
"""
