"""Timing: wall clock and interleaved call timing (calls), whole sampling loops (loop), router calibration
(calibration) and the `bench speed` engine (speed)."""
