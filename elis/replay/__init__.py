"""Offline workload replay and simulation: workload generators, trace readers, reports, the simulator."""
