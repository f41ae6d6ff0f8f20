"""Process entry points (thin): the writer sidecar and the verifier worker."""
