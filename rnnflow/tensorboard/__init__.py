"""rnnflow's TensorBoard plugin: the "Gradient Flow" tab (:mod:`rnnflow.tensorboard.plugin`).

Installed with the package under the ``tensorboard_plugins`` entry point, so that
``tensorboard --logdir logs`` shows it with no extra flag.
"""
