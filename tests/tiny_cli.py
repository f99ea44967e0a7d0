"""``python tests/tiny_cli.py ARGS`` is ``orthoxfer ARGS`` with the tests' tiny arch registered, for torchrun's processes."""

from tiny import TINY_ARCH, TINY_CONFIG

from orthoxfer.cli import app
from orthoxfer.models.loading import register_arch

if __name__ == "__main__":
    register_arch(TINY_ARCH, TINY_CONFIG)
    app(prog_name="orthoxfer")
