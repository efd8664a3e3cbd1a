"""A local sandbox: emulated AWS and Kubernetes APIs for running the operator without a cloud."""
