"""A C library with NVML's ABI (``fake_nvml.c``), built during the test run, and helpers."""
