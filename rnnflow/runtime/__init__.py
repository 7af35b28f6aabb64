"""Run mechanics: build a run from its config, checkpoints, resume, devices, host settings,
interrupts and the Hydra launch glue. Nothing here measures anything."""
