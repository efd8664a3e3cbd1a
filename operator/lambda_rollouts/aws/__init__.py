"""Everything that talks to AWS, all of it through botocore (``clients.AwsClients``). Of the
operator's own code, boto3 and botocore are imported nowhere else (the sandbox and
``lambda_rollouts.testing`` use them to run and to fake AWS)."""
