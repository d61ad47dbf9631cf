"""Which potential to serve, as one small value shared by the CLI, the pes plugin and launchers."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from ase.calculators.calculator import BaseCalculator

from mtp_driver.io.species import parse_species  # noqa: F401  (part of ipi's API)
from mtp_driver.ipi.evaluate import DriverError
from mtp_driver.potential import ASECalculatorPotential, Potential
from mtp_driver.plugins import construct

# resolved by name at run time, like any user calculator: ipi/ imports nothing of the model
MTP_CALCULATOR = "mtp_driver.calculator:MTPCalculator"
EMT_CALCULATOR = "ase.calculators.emt:EMT"
# a Potential forwarding to a learner server (`mtp-driver learn-server`): `serve --learner SOCKET`
LEARNER_CLIENT = "mtp_driver.learn.client:LearnerClient"


def file_version(path: str | Path) -> str:
    """'name:sha256-prefix' of a file: tells which exact model answered a request."""
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]
    return f"{Path(path).name}:{digest}"


@dataclass(frozen=True)
class PotentialSpec:
    """Exactly one of: an MTP file (`mtp`, with `species`), ASE's EMT, or an import path to an
    ASE calculator class or a `Potential` class (`calculator`, built with `calculator_kwargs`)."""

    mtp: str | None = None
    species: tuple[str, ...] = ()
    emt: bool = False
    calculator: str | None = None
    calculator_kwargs: dict = field(default_factory=dict)
    model_version: str | None = None

    def __post_init__(self):
        chosen = [self.mtp is not None, self.emt, self.calculator is not None]
        if sum(chosen) != 1:
            raise DriverError("choose exactly one potential: an MTP file, EMT, or a calculator import path")

    def build(self) -> Potential:
        if self.mtp is not None:
            if not Path(self.mtp).is_file():
                raise DriverError(f"potential file {self.mtp!r} does not exist")
            kwargs = {"species": list(self.species)} if self.species else {}
            from mtp_driver.calculator import MTPPotential

            calc = _construct(MTP_CALCULATOR, (self.mtp,), kwargs)
            return MTPPotential(calc, self.model_version or file_version(self.mtp))
        path = EMT_CALCULATOR if self.emt else self.calculator
        made = _construct(path, (), self.calculator_kwargs)
        if isinstance(made, BaseCalculator):
            return ASECalculatorPotential(made, self.model_version)
        if callable(getattr(made, "compute", None)):
            return made
        raise DriverError(f"{path!r} made a {type(made).__name__}: neither an ASE calculator nor a Potential")

    def cli_args(self) -> list[str]:
        """The `mtp-driver serve` options that select this potential."""
        if self.mtp is not None:
            args = ["--potential", self.mtp]
            args += ["--species", ",".join(self.species)] if self.species else []
        elif self.emt:
            args = ["--emt"]
        else:
            args = ["--calculator", self.calculator]
            args += ["--calculator-kwargs", json.dumps(self.calculator_kwargs)] if self.calculator_kwargs else []
        return args + (["--model-version", self.model_version] if self.model_version else [])


def _construct(path: str, args: tuple, kwargs: dict):
    try:
        return construct(path, *args, **kwargs)
    except ValueError as exc:
        raise DriverError(str(exc)) from exc
