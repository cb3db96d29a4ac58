"""How a batch is executed: where the blocks run, progress display, stall reports, logs.

Like the option groups of :mod:`segpipe.pipeline.options`, the fields carry their command-line
help, and the command line builds its options from them. Imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from segpipe.flows.security import TlsFiles, is_tls
from segpipe.models.foundation import InputError
from segpipe.pipeline.options import opt

if TYPE_CHECKING:
    from segpipe.flows.cluster import ClusterSpec
    from segpipe.flows.progress import Progress

__all__ = ["Execution"]


@dataclass(frozen=True)
class Execution:
    """Where the blocks run and how the run reports itself."""

    workers: int | None = opt(
        None, "Local Dask worker processes (default: one per GPU, else up to 4 sharing the "
        "cores, started only for inputs over 2048² pixels on machines of over two cores or with a "
        "GPU; 0: segment in this process)."
    )
    scheduler: str | None = opt(
        None, "Use an existing Dask cluster, e.g. tcp://host:8786, or tls://host:8786 with "
        "--tls-ca-file, --tls-cert and --tls-key."
    )
    tls_ca_file: str | None = opt(
        None, "For a tls:// --scheduler: the CA certificate (PEM) that signed the scheduler's "
        "and workers' certificates (default: Dask's distributed.comm.tls.ca-file)."
    )
    tls_cert: str | None = opt(
        None, "For a tls:// --scheduler: this client's certificate (PEM), signed by that CA "
        "(default: Dask's distributed.comm.tls.client.cert)."
    )
    tls_key: str | None = opt(
        None, "For a tls:// --scheduler: the private key of --tls-cert (PEM; default: Dask's "
        "distributed.comm.tls.client.key, or the key inside --tls-cert)."
    )
    stall_after: float = opt(
        600.0, "Report a stall when no block finishes for this many seconds."
    )
    quiet: bool = opt(False, "No progress display.")
    verbose: bool = opt(False, "Show Prefect's and Dask's logs.")

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 0:
            raise InputError(
                f"--workers {self.workers} is invalid: use 0 (in this process) or more"
            )
        if self.scheduler is not None and self.workers is not None:
            raise InputError(
                "--workers sizes the local cluster and cannot be used with --scheduler; size "
                "the existing cluster where it is started"
            )
        tls = self.tls_files()  # checks the files are readable; makes their paths absolute
        if tls.given and not is_tls(self.scheduler):
            one = len(tls.given) == 1
            raise InputError(
                f"{', '.join(tls.given)} {'is' if one else 'are'} for a tls:// --scheduler "
                f"(TLS to an existing Dask cluster); give --scheduler tls://HOST:PORT, or drop "
                f"{'it' if one else 'them'}"
            )
        for name in ("ca_file", "cert", "key"):
            object.__setattr__(self, f"tls_{name}", getattr(tls, name))
        if self.stall_after <= 0:
            raise InputError(f"--stall-after {self.stall_after} is invalid: use seconds > 0")

    def tls_files(self) -> TlsFiles:
        """The client's TLS files given (the others come from Dask's configuration)."""
        return TlsFiles(self.tls_ca_file, self.tls_cert, self.tls_key)

    def cluster_spec(self) -> ClusterSpec:
        """The Dask cluster these settings ask for."""
        from segpipe.flows.cluster import ClusterSpec

        return ClusterSpec(self.scheduler, self.workers, self.verbose, self.tls_files())

    def progress(self, total: int, megapixels: float, label: str) -> Progress:
        """The segment stage's progress display."""
        from segpipe.flows.progress import Progress

        return Progress(
            total, megapixels, quiet=self.quiet, stall_after=self.stall_after, label=label
        )
