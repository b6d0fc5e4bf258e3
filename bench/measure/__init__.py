"""One module per measurement (params, flops, latency, quality, loop, mini), each a bench.measure.base.Measurement
that groups its cells and measures a group at once."""
