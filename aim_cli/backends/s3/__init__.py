"""The S3 backend: ``backend`` (S3Backend, the Backend operations), ``resilience`` (stall deadline,
retries, hedged requests), ``errors`` (botocore failures as StorageErrors), ``client`` (boto3
sessions and client configuration). Nothing here imports boto3 until a backend is made."""
