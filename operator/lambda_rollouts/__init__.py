"""lambda-rollouts: progressive delivery for AWS Lambda aliases, driven from Kubernetes."""

__version__ = "0.1.0"
