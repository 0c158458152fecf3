"""Library side of the hardware engineer's toolbox: ports, probe, monitor, send, doctor."""
