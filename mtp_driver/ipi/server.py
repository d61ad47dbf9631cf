"""Running i-PI itself as a child process (demo, tests, benchmarks), on an input read from a file such as
protocols/nvt.xml with per-run settings (socket, steps, seed, temperature, ...) set on its parsed tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from mtp_driver.ipi.protocol import DEFAULT_UNIX_PREFIX, Endpoint


def ipi_executable() -> str:
    """The `i-pi` script of this environment (next to the interpreter), else the one on PATH."""
    beside = Path(sys.executable).with_name("i-pi")
    found = str(beside) if beside.exists() else shutil.which("i-pi")
    if found is None:
        raise FileNotFoundError("the i-pi executable is not installed: pip install ipi")
    return found


def configure_input(
    xml: str | os.PathLike,
    endpoint: Endpoint | None = None,
    *,
    total_steps: int | None = None,
    prefix: str | None = None,
    seed: int | None = None,
    temperature: float | None = None,
    nbeads: int | None = None,
    structure: str | os.PathLike | None = None,
    batch_size: int | None = None,
) -> str:
    """An i-PI input with per-run settings changed on its parsed tree, as text.

    `xml` is the input's text, or the path of a file (e.g. one of protocols/*.xml). Every
    <ffsocket> moves to `endpoint`; `total_steps`, the output `prefix` and the random `seed` are
    set (created if missing); `temperature` (kelvin) sets the thermal velocities and the ensemble
    temperature, `nbeads` and `structure` (the initial structure file) the <initialize> of every
    <system>, `batch_size` the structures per request of every <ffsocket> (i-PI's batched requests).
    Settings left None keep the input's value."""
    root = ET.parse(xml).getroot() if isinstance(xml, os.PathLike) else ET.fromstring(xml)
    if endpoint is not None:
        sockets = list(root.iter("ffsocket"))
        if not sockets:
            raise ValueError("the i-PI input has no <ffsocket>")
        for ff in sockets:
            for tag in ("address", "port"):
                for old in ff.findall(tag):
                    ff.remove(old)
            ff.set("mode", "unix" if endpoint.unix is not None else "inet")
            ET.SubElement(ff, "address").text = endpoint.unix if endpoint.unix is not None else endpoint.host
            if endpoint.port is not None:
                ET.SubElement(ff, "port").text = str(endpoint.port)
        if endpoint.unix is not None and endpoint.prefix != DEFAULT_UNIX_PREFIX:
            root.set("sockets_prefix", endpoint.prefix)
    if total_steps is not None:
        _child(root, "total_steps").text = str(total_steps)
    if prefix is not None:
        _child(root, "output").set("prefix", prefix)
    if seed is not None:
        _child(_child(root, "prng"), "seed").text = str(seed)
    if temperature is not None:
        for element in _every(root, "system/initialize/velocities[@mode='thermal']", "system/ensemble/temperature"):
            element.set("units", "kelvin")
            element.text = str(temperature)
    if nbeads is not None:
        for initialize in _every(root, "system/initialize"):
            initialize.set("nbeads", str(nbeads))
    if structure is not None:
        for file in _every(root, "system/initialize/file"):
            file.text = str(structure)
    if batch_size is not None:
        for ff in _every(root, "ffsocket"):
            _child(ff, "batch_size").text = str(batch_size)
    return ET.tostring(root, encoding="unicode")


def _child(parent: ET.Element, tag: str) -> ET.Element:
    found = parent.find(tag)
    return found if found is not None else ET.SubElement(parent, tag)


def _every(root: ET.Element, *paths: str) -> list[ET.Element]:
    """The elements at any of `paths`; an input without one cannot take the setting."""
    found = [element for path in paths for element in root.findall(path)]
    if not found:
        raise ValueError(f"the i-PI input has no {' nor '.join(paths)} to set")
    return found


class IPIProcess:
    """`i-pi INPUT` running in `workdir`; INPUT is `xml` (text, or a file such as protocols/nvt.xml)
    with its sockets moved to `endpoint` if given and the `configure` settings of
    `configure_input`; its output goes to `workdir/NAME.log`."""

    def __init__(
        self, xml: str | os.PathLike, workdir: str | Path, endpoint: Endpoint | None = None, name: str = "input",
        **configure,
    ):
        self.workdir = Path(workdir)
        self.endpoint = endpoint
        self.input = self.workdir / f"{name}.xml"
        if endpoint is not None or configure:
            xml = configure_input(xml, endpoint, **configure)
        elif isinstance(xml, os.PathLike):
            xml = Path(xml).read_text()
        self.input.write_text(xml)
        self.log_path = self.workdir / f"{name}.log"
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [ipi_executable(), self.input.name],
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_listening(self, timeout: float = 120.0) -> None:
        """Blocks until i-PI's UNIX socket file exists: clients without retries (i-PI's own
        py_driver) are refused before that."""
        if self.endpoint is None or self.endpoint.unix is None:
            raise ValueError("wait_listening needs a UNIX endpoint")
        deadline = time.monotonic() + timeout
        while not Path(self.endpoint.path).exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"i-PI exited before listening; log ends:\n{self.log()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"i-PI did not create {self.endpoint.path} within {timeout} s")
            time.sleep(0.05)
        time.sleep(0.2)  # the file appears at bind(); listen() follows

    def wait(self, timeout: float) -> int:
        """Waits for i-PI to finish; on timeout kills it and raises with the end of its log."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise TimeoutError(f"i-PI did not finish within {timeout} s; log ends:\n{self.log()[-2000:]}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
            # a killed i-PI leaves its socket file behind
            if self.endpoint is not None and self.endpoint.unix is not None:
                Path(self.endpoint.path).unlink(missing_ok=True)

    def __enter__(self) -> IPIProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.kill()
