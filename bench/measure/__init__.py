"""One module per measurement: params, flops, latency (speed), quality."""
