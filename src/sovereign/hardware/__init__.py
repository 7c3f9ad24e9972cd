"""Hardware doctor and capacity planner.

- :mod:`~sovereign.hardware.detect`: what this host has (CPU, RAM, instruction sets, NVIDIA GPUs via
  NVML, disks).
- :mod:`~sovereign.hardware.engines`: which inference engines can run on it, from a table whose every
  row cites its source.
- :mod:`~sovereign.hardware.model`: architecture facts of a model from a Hugging Face ``config.json``
  or GGUF metadata.
- :mod:`~sovereign.hardware.planner`: weights + KV-cache memory, the largest context / concurrency
  that fits, the decode-speed ceiling, and (:mod:`~sovereign.hardware.flags`) the engine flags.

``pynvml`` (nvidia-ml-py) and ``gguf`` are imported only in this package.
"""
