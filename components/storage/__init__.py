"""Tiered storage: hot node-local disks, cold S3 classes with lifecycle, a Firehose ingest buffer."""
