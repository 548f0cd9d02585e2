"""The model mirror's runtime: the bucket layout, the sync tool and the Hub-compatible app.

Runs without Pulumi: in the mirror image (as the package ``model_mirror``), in the
scheduled sync job and under ``platformctl mirror``. Only relative imports inside.
"""
