"""Old home of the query_field array conversion, now :mod:`neural_mapping.ros.fastpath` (guarded)
and :mod:`neural_mapping.ros.fastpath_srv` (its mechanics). These names stay only until
ros/node.py, tests/test_ros_node.py, benchmarks/bench_ros.py and docs/ros_node.md import them
from ``neural_mapping.ros.fastpath``; then delete this module."""

from neural_mapping.ros.fastpath import (QueryRequestArrays, QueryResponseArrays, array_client_types,  # noqa: F401
                                         array_request_type, array_response_type, use_arrays)
