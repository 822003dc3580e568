"""Run every benchmark module in this package (each defines ``main()``)."""

from __future__ import annotations

import importlib
import pkgutil

import bench


def main() -> None:
    for module in sorted(pkgutil.iter_modules(bench.__path__), key=lambda m: m.name):
        if not module.name.startswith("_"):
            importlib.import_module(f"bench.{module.name}").main()


if __name__ == "__main__":
    main()
