"""The machine itself: analytic FLOP counts (flops), peak measurements (probes), a job's
efficiency from its counts (efficiency), and the stored benchmark history (store)."""
