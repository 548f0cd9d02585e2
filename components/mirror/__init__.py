"""The model mirror: a Hugging Face-compatible CDN for model repos (see docs/model-mirror.md).

- ``runtime/``: the app, the sync tool and the bucket layout (no Pulumi; the mirror image).
- ``edge/``: the CloudFront Function that completes blob responses at the edge.
- ``component.py``: the Pulumi component (bucket, CloudFront, Lambda origin, sync schedule).
"""
