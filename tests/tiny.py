"""The tests' tiny open_clip arch, in a module of its own so that subprocesses (torchrun) can register it too."""

from orthoxfer.models.small import small_config

TINY_ARCH = "orthoxfer-test-tiny"
TINY_CONFIG = small_config(layers=1)
