"""Report sections: checks a suite runs after its cells, each judged row by row (runner.run_section)."""
