"""Sans-IO KMS logic: crypto, product data, the host's counting rules and the client life cycle."""
