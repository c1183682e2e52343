"""The node agent: NVML (or clearly simulated) GPU readings and Triton statistics → placement.

``agent.NodeAgent`` runs the loop; ``nvml.NvmlReader`` reads real GPUs through pynvml,
``fake_nvml.FakeNvml`` is its fake at the pynvml boundary, ``simulated.SimulatedGpuSource``
stands in when there is no GPU, and ``triton_stats.TritonStatsReader`` reads Triton.
Run it with ``python -m services.agent --help``.
"""
