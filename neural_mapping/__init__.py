"""neural_mapping: online neural implicit maps (SDF / radiance field) from RGB-D + poses."""

import os as _os

# OpenMP threads (torch's and the hash-grid kernel's) sleep instead of spinning while they wait.
# With the default (spinning), 2 threads on a 2-core machine that also runs the ROS executor or
# other jobs were 2-7x slower than 1 (benchmarks/RESULTS.md); passive waiting made 2 threads at
# least as fast as 1 in every run. Read by libgomp when torch loads it, so it only applies when
# neural_mapping is imported before torch (the CLI and the node are); an explicit setting wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
