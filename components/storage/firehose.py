"""The ingest buffer's delivery stream as Firehose's API takes it (pure; one source for Pulumi and moto)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Partitioned by component (a key Fluent Bit sets on every record) and by UTC arrival date,
# Hive-style so Athena/Glue read the partitions without configuration.
DATE = "year=!{timestamp:yyyy}/month=!{timestamp:MM}/day=!{timestamp:dd}/"
PREFIX = "logs/component=!{partitionKeyFromQuery:component}/" + DATE
ERROR_PREFIX = "errors/!{firehose:error-output-type}/" + DATE
METADATA_QUERY = "{component: .component}"
# Audit events: partitioned by their source (the part of `event` before the first dot:
# inference, mirror, failover), so a question about failovers reads no request events.
AUDIT_PREFIX = "events/source=!{partitionKeyFromQuery:source}/" + DATE
AUDIT_METADATA_QUERY = '{source: (.event | split(".") | .[0])}'
PARTITIONING_RETRY_SECONDS = 300


@dataclass(frozen=True)
class StreamLayout:
    """What tells the two delivery streams apart: the stream's name suffix, its bucket, its partitions."""

    suffix: str  # the stream is <project>-<environment>-<suffix>
    data_class: str  # the cold class whose bucket receives it
    prefix: str
    error_prefix: str
    metadata_query: str


LOGS = StreamLayout("logs", "logs", PREFIX, ERROR_PREFIX, METADATA_QUERY)
AUDIT = StreamLayout("audit", "audit", AUDIT_PREFIX, ERROR_PREFIX, AUDIT_METADATA_QUERY)


def destination(*, role_arn: Any, bucket_arn: Any, kms_key_arn: Any, log_group: str, buffering_size_mb: int,
                buffering_interval_seconds: int, layout: StreamLayout = LOGS) -> dict[str, Any]:  # fmt: skip
    """``ExtendedS3DestinationConfiguration`` of CreateDeliveryStream (the ARNs may be Pulumi outputs)."""
    return {
        "RoleARN": role_arn,
        "BucketARN": bucket_arn,
        "Prefix": layout.prefix,
        "ErrorOutputPrefix": layout.error_prefix,
        "BufferingHints": {"SizeInMBs": buffering_size_mb, "IntervalInSeconds": buffering_interval_seconds},
        "CompressionFormat": "GZIP",
        "EncryptionConfiguration": {"KMSEncryptionConfig": {"AWSKMSKeyARN": kms_key_arn}},
        "CloudWatchLoggingOptions": {"Enabled": True, "LogGroupName": log_group, "LogStreamName": "S3Delivery"},
        "DynamicPartitioningConfiguration": {"Enabled": True, "RetryOptions": {"DurationInSeconds": PARTITIONING_RETRY_SECONDS}},
        "ProcessingConfiguration": {"Enabled": True, "Processors": [
            {"Type": "MetadataExtraction", "Parameters": [
                {"ParameterName": "MetadataExtractionQuery", "ParameterValue": layout.metadata_query},
                {"ParameterName": "JsonParsingEngine", "ParameterValue": "JQ-1.6"}]},
            # One JSON object per line in the objects, as Athena reads them.
            {"Type": "AppendDelimiterToRecord", "Parameters": [{"ParameterName": "Delimiter", "ParameterValue": "\\n"}]},
        ]},
    }  # fmt: skip


def encryption(kms_key_arn: str) -> dict[str, Any]:
    """``DeliveryStreamEncryptionConfigurationInput``: records encrypted at rest inside Firehose too."""
    return {"KeyType": "CUSTOMER_MANAGED_CMK", "KeyARN": kms_key_arn}


def to_pulumi_destination(api: dict[str, Any]) -> dict[str, Any]:
    """The same destination as pulumi-aws's ``extended_s3_configuration`` (its field names differ)."""
    processing = api["ProcessingConfiguration"]
    return {
        "role_arn": api["RoleARN"],
        "bucket_arn": api["BucketARN"],
        "prefix": api["Prefix"],
        "error_output_prefix": api["ErrorOutputPrefix"],
        "buffering_size": api["BufferingHints"]["SizeInMBs"],
        "buffering_interval": api["BufferingHints"]["IntervalInSeconds"],
        "compression_format": api["CompressionFormat"],
        "kms_key_arn": api["EncryptionConfiguration"]["KMSEncryptionConfig"]["AWSKMSKeyARN"],
        "cloudwatch_logging_options": {"enabled": True, "log_group_name": api["CloudWatchLoggingOptions"]["LogGroupName"],
                                       "log_stream_name": api["CloudWatchLoggingOptions"]["LogStreamName"]},
        "dynamic_partitioning_configuration": {
            "enabled": api["DynamicPartitioningConfiguration"]["Enabled"],
            "retry_duration": api["DynamicPartitioningConfiguration"]["RetryOptions"]["DurationInSeconds"]},
        "processing_configuration": {"enabled": processing["Enabled"], "processors": [
            {"type": p["Type"], "parameters": [{"parameter_name": q["ParameterName"], "parameter_value": q["ParameterValue"]}
                                               for q in p["Parameters"]]}
            for p in processing["Processors"]]},
    }  # fmt: skip


def delivery_role_policy(bucket_arn: str, kms_key_arn: str, log_group_arn: str) -> dict[str, Any]:
    """What Firehose's role may do: write the logs bucket, encrypt with the key, log delivery errors."""
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "WriteLogsBucket", "Effect": "Allow",
         "Action": ["s3:AbortMultipartUpload", "s3:GetBucketLocation", "s3:GetObject", "s3:ListBucket",
                    "s3:ListBucketMultipartUploads", "s3:PutObject"],
         "Resource": [bucket_arn, f"{bucket_arn}/*"]},
        {"Sid": "EncryptObjects", "Effect": "Allow", "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
         "Resource": kms_key_arn},
        {"Sid": "DeliveryErrors", "Effect": "Allow", "Action": ["logs:PutLogEvents", "logs:CreateLogStream"],
         "Resource": f"{log_group_arn}:*"},
    ]}  # fmt: skip


def shipper_policy(*stream_arns: str) -> dict[str, Any]:
    """Fluent Bit's IRSA role: put records into these streams only (Firehose encrypts with its own grant)."""
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "PutRecords", "Effect": "Allow", "Action": ["firehose:PutRecordBatch", "firehose:PutRecord"],
         "Resource": list(stream_arns) if len(stream_arns) > 1 else stream_arns[0]},
    ]}  # fmt: skip
