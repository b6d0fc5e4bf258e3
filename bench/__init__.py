"""The DyDiT suite runner: measurements, suites, results and reports (`python -m bench`)."""
