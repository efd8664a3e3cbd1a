"""Everything that talks to AWS. boto3 and botocore are imported nowhere else."""
