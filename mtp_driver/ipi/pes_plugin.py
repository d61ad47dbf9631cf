"""i-PI pes plugin: use our potentials inside i-PI's own Python driver or in-process.

    i-pi-py_driver -m custom -P $(python -m mtp_driver.ipi.pes_plugin) -u -a NAME \\
        -o template=start.xyz,potential=pot.mtp,species=Cu:Ag
    <ffdirect name="mtp">
      <pes>custom</pes> <pes_path>(the same path)</pes_path>
      <parameters>{template: start.xyz, potential: pot.mtp, species: Cu:Ag}</parameters>
    </ffdirect>

Parameters: `template` (required) and one of `potential` (+ `species`, separated by ':' or
spaces since i-PI splits on commas), `emt=true`, or `calculator=module:Class`; optional
`min_distance` (Å) and `model_version`. Running this file prints its own path.
"""

from __future__ import annotations

import numpy as np
from ipi.pes.dummy import Dummy_driver

from mtp_driver.ipi.evaluate import Evaluator, read_template, template_label
from mtp_driver.ipi.sources import PotentialSpec, parse_species

__DRIVER_NAME__ = "mtp"
__DRIVER_CLASS__ = "MTPPes"


class MTPPes(Dummy_driver):
    def __init__(
        self,
        template,
        potential=None,
        species=None,
        emt=False,
        calculator=None,
        min_distance=None,
        model_version=None,
        *args,
        **kwargs,
    ):
        spec = PotentialSpec(
            mtp=potential,
            species=parse_species(species),
            emt=bool(emt),
            calculator=calculator,
            model_version=model_version,
        )
        self.evaluator = Evaluator(
            spec.build(),
            read_template(str(template)),
            min_distance=min_distance,
            template_name=template_label(template),
        )
        super().__init__(*args, **kwargs)

    def compute_structure(self, cell, pos):
        return self.evaluator(cell, pos)

    def compute(self, cell, pos):
        if isinstance(cell, list):  # i-PI's batched requests: one call of the potential for the whole batch
            return self.evaluator.batch(np.array([np.ravel(h) for h in cell]), np.array([np.ravel(x) for x in pos]))
        return self.compute_structure(cell, pos)


if __name__ == "__main__":
    print(__file__)
