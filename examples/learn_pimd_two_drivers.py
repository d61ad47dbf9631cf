#!/usr/bin/env python
"""PIMD with 8 beads served by 2 drivers that share one on-the-fly learner (issue 7, example 2).

i-PI runs path-integral MD (protocols/pimd.xml: PILE-L thermostat, 8 beads) of 32 fcc Cu
atoms; two driver threads take the bead requests and share one learner that starts from an
untrained level-8 MTP with EMT as the reference. Candidates from all beads are pooled and
selected together, so no structure is computed twice; a bead whose structure is interpolative is
answered at once.

    python examples/learn_pimd_two_drivers.py [--steps 200] [--run-dir pimd-run]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import uuid
from collections import Counter
from pathlib import Path

from ase.build import bulk

from mtp_driver.ipi import DriverThread, Endpoint, IPIProcess, make_driver
from mtp_driver.learn.learner import Learner
from mtp_driver.learn.settings import LearnSettings
from mtp_driver.mtp.basis import untrained_mtp

PIMD = Path(__file__).resolve().parents[1] / "protocols" / "pimd.xml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--temperature", type=float, default=300.0)
    parser.add_argument("--run-dir", type=Path, default=Path(tempfile.mkdtemp(prefix="pimd-run-")))
    args = parser.parse_args()
    args.run_dir.mkdir(parents=True, exist_ok=True)
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    atoms.write(args.run_dir / "start.extxyz")
    learner = Learner(untrained_mtp(8, 1, 2.0, 5.0, species=["Cu"]), args.run_dir / "learning",
                      LearnSettings(species=("Cu",), refit_iterations=100))
    endpoint = Endpoint(unix=f"pimd_{uuid.uuid4().hex[:8]}")
    with IPIProcess(PIMD, args.run_dir, endpoint, name="pimd", total_steps=args.steps, seed=2718,
                    temperature=args.temperature, structure="start.extxyz", prefix="pimd") as ipi:
        drivers = [DriverThread(make_driver(learner, atoms), endpoint) for _ in range(2)]
        for driver in drivers:
            driver.start()
        code = ipi.wait(3600)
        served = [driver.result(60).requests for driver in drivers]
    learner.close(final_refit=False)
    events = learner.journal.events()
    computed = Counter(event["key"] for event in events if event["event"] == "reference")
    result = dict(ipi_exit=code, requests_per_driver=served, reference_calls=len(computed),
                  computed_twice=sum(count > 1 for count in computed.values()), summary=learner.summary())
    print(f"i-PI exit {code}; 8 beads x {args.steps + 1} force calls served by 2 drivers: {served}")
    print(f"{len(computed)} reference calls, {result['computed_twice']} structures computed twice, "
          f"{learner.summary()['retrainings']} retrainings; outputs in {args.run_dir}")
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
