"""Load from many emulated KMS clients on Locust's engine (``emu load``): one user per client machine."""
