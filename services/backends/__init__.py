"""Real Triton backends for the local mesh, and the EMULATED WAN between regions.

- :mod:`services.backends.repository` writes a backend's Triton model repository (real numpy
  compute, accelerator speed emulated by dividing the work) and the drill control file.
- :mod:`services.backends.triton` runs the nvidia-pytriton wheel's ``tritonserver`` on it.
- :mod:`services.backends.wan` relays TCP with a per-direction delay (emulated RTT).
- ``python -m services.backends --config F --backend ID`` execs one backend's server.
"""
