"""Self-configuration: ``python -m src.plan`` reads a new data set and writes the config that
trains it. ``fingerprint.py`` measures the data, ``rules.py`` holds the planning rules,
``budget.py`` measures a training step, ``planner.py`` writes the config and ``report.py`` the
data-set report (``dataset_report.html``)."""
