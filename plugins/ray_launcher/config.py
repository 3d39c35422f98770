"""The ``ray`` launcher's settings (``--set launcher.KEY=VALUE``). Imports pydantic only:
listing plugins must not import Ray."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# what ray.init takes as an address, narrowed to the forms this launcher documents; a typo
# such as "ray:/head:10001" fails here instead of after a long connection timeout
_ADDRESS = re.compile(r"^(auto|ray://[^\s/:]+:\d{1,5}|[^\s/:]+:\d{1,5})$")


class RayLauncherConfig(BaseModel):
    """Where the Ray cluster is and what each run reserves on it."""

    model_config = ConfigDict(extra="forbid")

    address: str | None = Field(
        None, description="Unset: start a private Ray instance in the sweep's process (this machine only), "
                          "stopped when the sweep ends. 'auto': the cluster started on this machine with "
                          "`ray start --head`. 'ray://HOST:10001': Ray Client to a remote cluster's head. "
                          "'HOST:6379': a cluster's head (GCS) address, as ray.init takes it.")
    cpus_per_run: int = Field(
        1, ge=1, description="CPUs Ray reserves for each run; also the torch threads the run uses (run.threads).")
    gpus_per_run: float = Field(
        0, ge=0, description="GPUs Ray reserves for each run (a fraction shares a GPU); Ray sets the run's "
                             "CUDA_VISIBLE_DEVICES. 0: the run sees no GPU.")
    num_cpus: int | None = Field(
        None, ge=1, description="CPUs of the private instance (address unset); default: all of this machine's cores.")
    namespace: str = Field(
        "rlx", min_length=1, description="Ray namespace of the sweep's jobs (what `ray list` filters by).")
    stop_timeout_s: float = Field(
        60.0, gt=0, description="When a sweep ends with runs in flight: how long they get to checkpoint after "
                                "SIGTERM; then a second SIGTERM stops them at once, and 15 s later their Ray tasks "
                                "are killed.")

    @field_validator("address")
    @classmethod
    def _check_address(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if not _ADDRESS.match(value):
            raise ValueError(f"'{value}' is not a Ray address: use auto, HOST:PORT or ray://HOST:PORT, "
                             "or leave it unset for a private local instance")
        return value

    @model_validator(mode="after")
    def _num_cpus_only_for_local(self) -> "RayLauncherConfig":
        if self.num_cpus is not None and self.address is not None:
            # an existing cluster's CPUs are what its nodes declared at `ray start`
            raise ValueError("num_cpus sizes the private local instance only; with an address, set "
                             "`ray start --num-cpus N` on the nodes instead")
        return self
