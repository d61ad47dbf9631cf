"""Serve any `Potential` (`mtp_driver.potential`) to i-PI and ASE over the i-PI socket protocol.

Imports nothing of the model: the MTP arrives through `PotentialSpec(mtp=...)`, resolved by name.
Names load on first use, so `mtp-driver` can build its parser without importing ASE.
"""

import importlib

_EXPORTS = {
    "driver": [
        "Driver", "DriverThread", "SocketClientLauncher", "Summary", "driver_command",
        "make_driver", "run", "socket_calculator", "start_driver_process",
    ],
    "evaluate": ["DriverError", "Evaluator", "read_template"],
    "protocol": ["DEFAULT_UNIX_PREFIX", "Endpoint"],
    "server": ["IPIProcess", "configure_input"],
    "sources": ["PotentialSpec", "parse_species"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
